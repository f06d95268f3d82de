//! `meshbox up`: start the mesh, serve the control socket, stop everything on
//! Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Mutex;

use meshbox_config::read_sources;
use meshbox_proxy::{Override, Resolver};

use crate::control::{call, ControlRequest, ControlResponse};
use crate::images::ImageMap;
use crate::mesh::{Mesh, MeshSettings};
use crate::paths::{control_socket, state_dir};
use crate::ports::{PortReservation, REUSEPORT_ENV};
use crate::supervisor::{ProcessSpec, Supervised};

/// Options of `meshbox up`.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Manifest files or directories to apply at startup.
    pub paths: Vec<PathBuf>,
    /// `-n`: namespace for objects that name none (default: `default`).
    pub namespace: Option<String>,
    /// `--set` install flags, as istioctl spells them.
    pub set: Vec<String>,
    /// `--images` mapping files, in addition to `meshbox.images` beside the manifests.
    pub images: Vec<PathBuf>,
    /// `--resolve HOST:PORT:ADDR` overrides for the proxies' name resolution.
    pub resolve: Vec<String>,
    /// `--connect-to HOST:PORT:HOST2:PORT2` overrides for the proxies' name resolution.
    pub connect_to: Vec<String>,
    /// `HOST:PORT=APP`: run built-in APP outside the mesh and send HOST:PORT to it.
    pub stand_in: Vec<String>,
    /// Local port of the ingress gateway's port 80 (0: any free port).
    pub ingress_port: u16,
    /// Seed for weighted routing choices; `None`: taken from the clock.
    pub seed: Option<u64>,
    /// Local port of the admin listener that serves every proxy's Prometheus metrics
    /// (0: any free port).
    pub metrics_port: u16,
    /// The worker threads that serve the proxies (see
    /// [`crate::mesh::MeshSettings::workers`]).
    pub workers: meshbox_proxy::Workers,
}

/// Runs the mesh until a signal arrives.
pub async fn run_up(opts: UpOptions) -> anyhow::Result<()> {
    let dir = state_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let socket = control_socket(&dir);
    if socket.exists() {
        if UnixListenerProbe::is_live(&socket).await {
            anyhow::bail!(
                "a mesh is already running with state directory {} (stop it, or set MESHBOX_HOME)",
                dir.display()
            );
        }
        std::fs::remove_file(&socket)?;
    }
    let _ = std::fs::remove_dir_all(dir.join("logs"));
    std::fs::create_dir_all(dir.join("logs"))?;
    let exe = std::env::current_exe()?;

    // Stand-ins for external hosts run outside the mesh, each on a free port.
    let mut overrides = Vec::new();
    let mut stand_ins = Vec::new();
    // Each stand-in's port stays reserved while meshbox runs (see `ports`).
    let mut stand_in_ports = Vec::new();
    for s in &opts.stand_in {
        let (hostport, app) = s
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--stand-in {s:?}: expected HOST:PORT=APP"))?;
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("--stand-in {s:?}: expected HOST:PORT=APP"))?;
        if !crate::images::meshbox_apps_names().contains(&app) {
            anyhow::bail!(
                "--stand-in {s:?}: unknown app {app:?}; built-in apps are {}",
                crate::images::meshbox_apps_names().join(", ")
            );
        }
        let reservation = PortReservation::new()?;
        let app_port = reservation.port();
        stand_in_ports.push(reservation);
        overrides.push(
            Override::parse_connect_to(&format!("{host}:{port}:127.0.0.1:{app_port}"))
                .map_err(anyhow::Error::msg)?,
        );
        let log_file = dir.join("logs").join(format!("stand-in.{host}.log"));
        stand_ins.push((
            SocketAddr::from(([127, 0, 0, 1], app_port)),
            Supervised::start(ProcessSpec {
                program: exe.clone(),
                args: vec!["app".into(), app.to_string()],
                env: vec![
                    ("PORT".into(), app_port.to_string()),
                    ("BIND_ADDRESS".into(), "127.0.0.1".into()),
                    (REUSEPORT_ENV.into(), "1".into()),
                ],
                working_dir: None,
                log_file,
            }),
        ));
        eprintln!("meshbox: {host}:{port} is served by the stand-in {app} at 127.0.0.1:{app_port}");
    }
    for r in &opts.resolve {
        overrides.push(Override::parse_resolve(r).map_err(anyhow::Error::msg)?);
    }
    for c in &opts.connect_to {
        overrides.push(Override::parse_connect_to(c).map_err(anyhow::Error::msg)?);
    }

    let mut images = ImageMap::default();
    images
        .load_beside(&opts.paths)
        .map_err(anyhow::Error::msg)?;
    for f in &opts.images {
        images.load_file(f).map_err(anyhow::Error::msg)?;
    }
    let sources = if opts.paths.is_empty() {
        Vec::new()
    } else {
        read_sources(&opts.paths)?
    };
    let seed = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let settings = MeshSettings {
        dir: dir.clone(),
        default_namespace: opts.namespace.clone().unwrap_or_else(|| "default".into()),
        set_flags: opts.set.clone(),
        images,
        resolver: Arc::new(Resolver::new(overrides)),
        ingress_port: opts.ingress_port,
        seed,
        exe,
        workers: opts.workers.clone(),
    };
    let mut mesh = Mesh::new(settings).map_err(anyhow::Error::msg)?;
    let started = std::time::Instant::now();
    if sources.is_empty() {
        // Nothing to apply: the mesh starts what the install options enable (the
        // gateways). An apply reconciles by itself: a second pass would compile every
        // proxy's tables again for nothing.
        mesh.reconcile().await;
    } else {
        match mesh.apply(&sources, opts.namespace.clone()).await {
            Ok(out) => print!("{out}"),
            Err(e) => {
                for (_, s) in stand_ins {
                    s.stop().await;
                }
                mesh.shutdown().await;
                anyhow::bail!("{e}");
            }
        }
    }
    // The control socket exists before GATEWAY_URL is printed, so that whoever
    // reads that line can `apply` at once (connections wait in the backlog).
    let listener = UnixListener::bind(&socket)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    // Every proxy's Prometheus metrics, one path per proxy (admin.rs).
    let admin = tokio::net::TcpListener::bind(("127.0.0.1", opts.metrics_port)).await?;
    let admin_addr = admin.local_addr()?;
    std::fs::write(
        crate::paths::admin_address_file(&dir),
        format!("{admin_addr}\n"),
    )?;
    let admin_server = tokio::spawn(crate::admin::serve_admin(admin, mesh.metrics_index()));
    println!(
        "meshbox: Prometheus metrics at http://{admin_addr}{}/NAMESPACE/POD (the list: http://{admin_addr}{}, or `meshbox metrics`)",
        crate::admin::METRICS_PATH,
        crate::admin::METRICS_PATH
    );
    match mesh.ingress_address() {
        Some(addr) => println!("export GATEWAY_URL={addr}"),
        None => println!("# no ingress gateway is enabled"),
    }
    let mut waits: Vec<(String, SocketAddr)> = mesh.app_addresses();
    waits.extend(stand_ins.iter().map(|(a, _)| ("stand-in".to_string(), *a)));
    let not_ready = wait_for_ports(&waits, Duration::from_secs(15)).await;
    if not_ready.is_empty() {
        println!(
            "meshbox: mesh is ready in {} ms ({} pods); Ctrl-C to stop",
            started.elapsed().as_millis(),
            waits.len()
        );
    } else {
        println!(
            "meshbox: mesh is up; not yet answering: {}",
            not_ready.join(", ")
        );
    }

    let mesh = Arc::new(Mutex::new(mesh));
    let server = tokio::spawn(serve_control(listener, mesh.clone()));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    eprintln!("meshbox: stopping");
    server.abort();
    admin_server.abort();
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(crate::paths::admin_address_file(&dir));
    mesh.lock().await.shutdown().await;
    for (_, s) in stand_ins {
        s.stop().await;
    }
    Ok(())
}

struct UnixListenerProbe;

impl UnixListenerProbe {
    async fn is_live(socket: &std::path::Path) -> bool {
        tokio::net::UnixStream::connect(socket).await.is_ok()
    }
}

/// Waits until each address accepts connections; returns the names that never did.
async fn wait_for_ports(addrs: &[(String, SocketAddr)], limit: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut pending: Vec<(String, SocketAddr)> = addrs.to_vec();
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for (n, a) in pending {
            if tokio::net::TcpStream::connect(a).await.is_err() {
                still.push((n, a));
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    pending.into_iter().map(|(n, _)| n).collect()
}

async fn serve_control(listener: UnixListener, mesh: Arc<Mutex<Mesh>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let mesh = mesh.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let response = match serde_json::from_str::<ControlRequest>(&line) {
                Ok(req) => handle(&mesh, req).await,
                Err(e) => ControlResponse::err(format!("bad control request: {e}")),
            };
            if let Ok(mut text) = serde_json::to_string(&response) {
                text.push('\n');
                let _ = write.write_all(text.as_bytes()).await;
            }
        });
    }
}

async fn handle(mesh: &Mutex<Mesh>, req: ControlRequest) -> ControlResponse {
    let mut mesh = mesh.lock().await;
    let result = match req {
        ControlRequest::Analyze {
            namespace,
            all_namespaces,
        } => {
            use meshbox_routing::analyze;
            let workloads = mesh.workloads();
            let messages = analyze::analyze(mesh.store(), mesh.options(), &workloads);
            let namespace = namespace.unwrap_or_else(|| "default".into());
            let scope = (!all_namespaces).then_some(namespace.as_str());
            let messages = analyze::sorted(analyze::in_namespace(messages, scope));
            serde_json::to_string(&messages).map_err(|e| e.to_string())
        }
        ControlRequest::Apply {
            sources,
            namespace,
            images,
        } => mesh.apply_with_images(&sources, namespace, &images).await,
        ControlRequest::Delete { sources, namespace } => mesh.delete(&sources, namespace).await,
        ControlRequest::Install { set } => mesh.install(set).await,
        ControlRequest::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            output,
        } => crate::format::get(
            &mesh,
            &kind,
            name.as_deref(),
            namespace.as_deref(),
            all_namespaces,
            output.as_deref(),
        ),
        ControlRequest::Locate { name, namespace } => {
            return match mesh.locate(&name, namespace.as_deref()) {
                Some(pod) => ControlResponse {
                    ok: true,
                    pod: Some(pod),
                    ..Default::default()
                },
                None => ControlResponse::err(format!(
                    "Error from server (NotFound): no pod, deployment or gateway named {name:?}"
                )),
            }
        }
        ControlRequest::Trace {
            from,
            namespace,
            request,
            output,
        } => match mesh.trace(&from, namespace.as_deref(), &request) {
            Some(t) => meshbox_routing::trace::render_as(&t, output.as_deref()),
            None => Err(format!(
                "Error from server (NotFound): no pod, deployment or gateway named {from:?}"
            )),
        },
        ControlRequest::ProxyConfig {
            view,
            name,
            namespace,
            output,
        } => match mesh.proxy_config(&name, namespace.as_deref()) {
            Some(c) => meshbox_routing::dump::render_as(&c, &view, output.as_deref()),
            None => Err(format!(
                "Error from server (NotFound): no pod, deployment or gateway named {name:?}"
            )),
        },
    };
    match result {
        Ok(out) => ControlResponse::ok(out),
        Err(e) => ControlResponse::err(e),
    }
}

/// Sends a request to the running mesh of this state directory.
pub async fn control(request: ControlRequest) -> Result<ControlResponse, String> {
    call(&control_socket(&state_dir()), &request).await
}
