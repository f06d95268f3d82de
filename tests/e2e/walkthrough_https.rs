//! The README's HTTPS and TLS-origination steps (6 to 8), as a person runs them after
//! the scenario's step 5: `scripts/tls-site` (openssl) serves secure.example.test and
//! worldtimeapi.org over TLS on 127.0.0.1 with a CA it makes, `meshbox up
//! --connect-to` points the names at them, and the files of `examples/https` are
//! applied unchanged (except the CA path of worldtime-tls-origination.yml, which
//! points at this test's directory instead of /tmp/meshbox-tls).

use crate::common;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::MeshProcess;

const NS: &str = "dev-service-mesh";

/// `scripts/tls-site NAME PORT DIR`, stopped (by its process id) when dropped.
struct TlsSite(Child);

impl TlsSite {
    fn start(name: &str, dir: &Path) -> (TlsSite, u16) {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tls-site");
        let child = Command::new(script)
            .args([name, &port.to_string(), &dir.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("scripts/tls-site (needs bash and openssl)");
        let mut site = TlsSite(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = site.0.try_wait() {
                panic!("scripts/tls-site {name} exited with {status}");
            }
            assert!(Instant::now() < deadline, "tls-site {name} never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        (site, port)
    }
}

impl Drop for TlsSite {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// `meshbox exec service-c-deployment -- curl -s --cacert CA URL`, retried until its
/// output contains `expect` (or `None`: until curl fails), for 20 s at most.
fn curl_from_service_c(mesh: &MeshProcess, ca: &str, url: &str, expect: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = mesh.run(&[
            "exec",
            "service-c-deployment",
            "-n",
            NS,
            "--",
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca,
            url,
        ]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let done = match expect {
            Some(e) => out.status.success() && text.contains(e),
            None => !out.status.success(),
        };
        if done {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "curl {url} from ServiceC never gave {expect:?}; last: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readme_https_and_tls_origination_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_secure, secure_port) = TlsSite::start("secure.example.test", dir.path());
    let (_worldtime, worldtime_port) = TlsSite::start("worldtimeapi.org", dir.path());
    let ca = dir.path().join("ca.pem").display().to_string();
    let mesh = MeshProcess::start(&[
        "-n",
        NS,
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--stand-in",
        "worldtimeapi.org:80=worldtime",
        "--connect-to",
        &format!("secure.example.test:443:127.0.0.1:{secure_port}"),
        "--connect-to",
        &format!("worldtimeapi.org:443:127.0.0.1:{worldtime_port}"),
    ]);
    // Steps 1 to 5 of the scenario, ending with all traffic to ServiceC through the
    // egress gateway.
    mesh.apply(&common::course_to_c());
    mesh.ok(&[
        "install",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--set",
        "components.egressGateways[0].name=istio-egressgateway",
        "--set",
        "components.egressGateways[0].enabled=true",
    ]);
    mesh.apply(&[
        "worldtime-host-se.yml",
        "worldtime-gw.yml",
        "outbound-srv-c-to-worldtime-vs.yml",
    ]);
    mesh.wait_for("/service-a", |s, b| {
        s == 200 && b.contains("Europe/Amsterdam")
    });

    // 6. HTTPS from a workload: refused in REGISTRY_ONLY until a ServiceEntry lists it.
    let url = "https://secure.example.test/hello.txt";
    let refused = curl_from_service_c(&mesh, &ca, url, None);
    assert!(refused.contains("502"), "{refused}");
    let log = mesh.wait_for_log("service-c-deployment", NS, |l| {
        l.contains("\"secure.example.test:443\"")
    });
    assert!(log.contains("BlackHoleCluster"), "{log}");
    let se = example("https/secure-se.yml").display().to_string();
    mesh.ok(&["apply", "-n", NS, "-f", &se]);
    curl_from_service_c(
        &mesh,
        &ca,
        url,
        Some("hello from secure.example.test over TLS"),
    );
    mesh.wait_for_log("service-c-deployment", NS, |l| {
        l.contains("outbound|443||secure.example.test")
    });

    // 7. The same HTTPS through the egress gateway, routed by SNI.
    let gw = example("https/secure-egress-gateway.yml")
        .display()
        .to_string();
    mesh.ok(&["apply", "-n", NS, "-f", &gw]);
    curl_from_service_c(
        &mesh,
        &ca,
        url,
        Some("hello from secure.example.test over TLS"),
    );
    let log = mesh.wait_for_log("istio-egressgateway", "istio-system", |l| {
        l.contains("outbound|443||secure.example.test")
    });
    let line = log
        .lines()
        .find(|l| l.contains("outbound|443||secure.example.test"))
        .unwrap();
    assert!(line.contains("secure.example.test -"), "the SNI: {line}");
    assert!(
        line.contains(&format!("\"127.0.0.1:{secure_port}\"")),
        "{line}"
    );

    // 8. TLS origination: ServiceC calls http://worldtimeapi.org, the mesh calls
    // https://worldtimeapi.org (the TLS site, not the plain stand-in).
    let yaml = std::fs::read_to_string(example("https/worldtime-tls-origination.yml"))
        .expect("example")
        .replace("/tmp/meshbox-tls/ca.pem", &ca);
    let origination = dir.path().join("worldtime-tls-origination.yml");
    std::fs::write(&origination, yaml).expect("write");
    let out = mesh.ok(&["apply", "-n", NS, "-f", &origination.display().to_string()]);
    assert!(!out.contains("not enforced"), "{out}");
    let tls_upstream = format!("\"127.0.0.1:{worldtime_port}\"");
    let log = mesh.wait_for_log("istio-egressgateway", "istio-system", |l| {
        mesh.get("/service-a");
        l.lines().any(|line| {
            line.contains("outbound|80||worldtimeapi.org") && line.contains(&tls_upstream)
        })
    });
    let line = log
        .lines()
        .find(|l| l.contains("outbound|80||worldtimeapi.org") && l.contains(&tls_upstream))
        .unwrap();
    assert!(
        line.contains("\"GET /api/timezone/Europe HTTP/1.1\" 200"),
        "{line}"
    );
    let (_, body) = mesh.wait_for("/service-a", |s, b| {
        s == 200 && b.contains("Europe/Belgrade")
    });
    assert!(
        body.contains("Received response from worldtimeapi.org: Europe/Amsterdam"),
        "{body}"
    );
}
