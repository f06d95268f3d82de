#![forbid(unsafe_code)]
//! The `meshbox` command: argument parsing and output; the work is in the crates.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshbox_config::Source;
use meshbox_runtime::{control, ControlRequest, UpOptions};

/// mimalloc instead of glibc's malloc: the request path allocates small, short-lived
/// buffers on every request (headers, bodies, futures), and glibc's allocator was about
/// a tenth of the proxy's CPU under load (docs/PERFORMANCE.md). Entered through its plain
/// calls where the alignment allows (crates/alloc).
#[global_allocator]
static ALLOCATOR: meshbox_alloc::MeshAllocator = meshbox_alloc::MeshAllocator;

mod analyze_cmd;
mod proxy_config_cmd;
mod trace_cmd;

/// A local service mesh that speaks Istio's networking API.
#[derive(Parser)]
#[command(name = "meshbox", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the mesh from manifest files or directories and run until Ctrl-C.
    Up {
        /// Manifest files or directories (like kubectl apply -f).
        paths: Vec<PathBuf>,
        /// Namespace for objects that name none.
        #[arg(short, long)]
        namespace: Option<String>,
        /// Install options as istioctl spells them, e.g. meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY.
        #[arg(long = "set")]
        set: Vec<String>,
        /// Image mapping files (in addition to meshbox.images beside the manifests).
        #[arg(long)]
        images: Vec<PathBuf>,
        /// HOST:PORT:ADDR, like curl: connections to HOST:PORT go to ADDR.
        #[arg(long)]
        resolve: Vec<String>,
        /// HOST:PORT:HOST2:PORT2, like curl: connections to HOST:PORT go to HOST2:PORT2.
        #[arg(long = "connect-to")]
        connect_to: Vec<String>,
        /// HOST:PORT=APP: run the built-in APP outside the mesh as HOST:PORT (e.g. worldtimeapi.org:80=worldtime).
        #[arg(long = "stand-in")]
        stand_in: Vec<String>,
        /// Local port of the ingress gateway's port 80 (0: any free port).
        #[arg(long, default_value_t = 0)]
        ingress_port: u16,
        /// Seed for weighted routing choices, for reproducible runs.
        #[arg(long, env = "MESHBOX_SEED")]
        seed: Option<u64>,
        /// Local port of the admin listener serving every proxy's Prometheus metrics (0: any free port).
        #[arg(long, default_value_t = 0)]
        metrics_port: u16,
        /// Worker threads that run every gateway and sidecar proxy (the control plane has
        /// a thread of its own); default 2, as Istio's proxies (ProxyConfig `concurrency`).
        #[arg(long, env = "MESHBOX_PROXY_THREADS")]
        proxy_threads: Option<usize>,
    },
    /// Prometheus metrics: the scrape URL of every proxy, or one proxy's metrics.
    Metrics {
        /// Pod, Deployment or gateway name; without it, the list of scrape URLs.
        name: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Apply manifests to the running mesh.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Delete the objects that manifests define from the running mesh.
    Delete {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// List objects (vs, dr, se, gw, svc, deploy, sidecar, ns) or pods.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// yaml or json.
        #[arg(short, long)]
        output: Option<String>,
    },
    /// Change install options of the running mesh (replaces earlier --set flags).
    Install {
        #[arg(long = "set")]
        set: Vec<String>,
    },
    /// Print the log of a pod's container (istio-proxy by default: the access log).
    Logs {
        /// Pod, Deployment or gateway name.
        name: String,
        #[arg(short, long, default_value = "istio-proxy")]
        container: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Run a command as if inside a workload: its environment, its sidecar as HTTP_PROXY.
    Exec {
        /// Pod or Deployment name.
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Check configuration with istioctl analyze's messages: the given files, or the running mesh.
    Analyze(analyze_cmd::AnalyzeArgs),
    /// Run one of the built-in workloads (service-a, service-b, service-c, worldtime, echo, static-1k).
    App { name: String },
    /// Explain, step by step, how a workload's sidecar or a gateway routes a request.
    Trace(trace_cmd::TraceArgs),
    /// Print one proxy's compiled tables: routes, clusters, listeners or endpoints.
    ProxyConfig(proxy_config_cmd::ProxyConfigArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHBOX_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // `up` runs every proxy of the mesh; a workload (`app`) gets tokio's default, one
    // thread per CPU, as its own binary would; the other commands are clients.
    let threads = match &cli.command {
        Command::Up { proxy_threads, .. } => {
            Some(proxy_threads.unwrap_or_else(default_proxy_threads))
        }
        Command::App { .. } => None,
        _ => Some(1),
    };
    // `up`: the proxies run on worker threads of their own, each a single-threaded
    // runtime (as Envoy's workers each run an event loop), and the control plane on a
    // runtime of its own with one thread. Measured in docs/PERFORMANCE.md: less CPU per
    // request and a higher maximum rate than proxies and control plane sharing one
    // multi-thread runtime.
    let workers = match (&cli.command, threads) {
        (Command::Up { .. }, Some(n)) => match WorkerThreads::start(n.max(1)) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: cannot start the proxies' worker threads: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match (&workers, threads) {
        (Some(_), _) => {
            builder.worker_threads(1);
        }
        (None, Some(n)) => {
            builder.worker_threads(n.max(1));
        }
        (None, None) => {}
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handles = workers
        .as_ref()
        .map(WorkerThreads::workers)
        .unwrap_or_default();
    let code = match runtime.block_on(run(cli, handles)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    };
    drop(runtime);
    drop(workers);
    code
}

/// The proxies' worker threads, each running a single-threaded tokio runtime; stopped
/// (their tasks dropped) when this is dropped.
struct WorkerThreads {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl WorkerThreads {
    fn start(count: usize) -> std::io::Result<WorkerThreads> {
        let mut workers = WorkerThreads {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            workers.stops.push(stop);
            workers.threads.push(
                std::thread::Builder::new()
                    .name(format!("meshbox-worker-{index}"))
                    .spawn(move || {
                        meshbox_proxy::workers::set_current_worker(index);
                        let _ = runtime.block_on(stopped);
                    })?,
            );
        }
        Ok(workers)
    }

    fn workers(&self) -> meshbox_proxy::Workers {
        meshbox_proxy::Workers::new(self.handles.clone())
    }
}

impl Drop for WorkerThreads {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Two, Istio's default for its proxies (ProxyConfig `concurrency`, istio/api
/// mesh/v1alpha1/proxy.proto: "Default is 2 worker threads"). Measured on the 2-CPU
/// machine of docs/PERFORMANCE.md: with one worker the maximum rate stopped short with
/// CPU left idle (one thread gets one thread's share of the CPUs beside the load
/// generator's and the upstream's threads), while HAProxy ran `nbthread 2`; one worker
/// used less CPU per request at fixed rates (both rows are in the tables).
fn default_proxy_threads() -> usize {
    2
}

async fn run(cli: Cli, workers: meshbox_proxy::Workers) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up {
            paths,
            namespace,
            set,
            images,
            resolve,
            connect_to,
            stand_in,
            ingress_port,
            seed,
            metrics_port,
            proxy_threads: _,
        } => {
            meshbox_runtime::run_up(UpOptions {
                paths,
                namespace,
                set,
                images,
                resolve,
                connect_to,
                stand_in,
                ingress_port,
                seed,
                metrics_port,
                workers,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply { files, namespace } => {
            let sources = read_files(&files)?;
            let paths: Vec<PathBuf> = files
                .iter()
                .filter(|f| *f != "-")
                .map(PathBuf::from)
                .collect();
            let mut images = Vec::new();
            for path in meshbox_runtime::images::files_beside(&paths) {
                let text = std::fs::read_to_string(&path)?;
                images.push(Source {
                    name: path.display().to_string(),
                    text,
                });
            }
            respond(ControlRequest::Apply {
                sources,
                namespace,
                images,
            })
            .await
        }
        Command::Delete { files, namespace } => {
            let sources = read_files(&files)?;
            respond(ControlRequest::Delete { sources, namespace }).await
        }
        Command::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            output,
        } => {
            respond(ControlRequest::Get {
                kind,
                name,
                namespace,
                all_namespaces,
                output,
            })
            .await
        }
        Command::Install { set } => respond(ControlRequest::Install { set }).await,
        Command::Logs {
            name,
            container,
            namespace,
        } => {
            let pod = locate(name, namespace).await?;
            let Some((_, file)) = pod.logs.iter().find(|(c, _)| *c == container) else {
                let names: Vec<&str> = pod.logs.iter().map(|(c, _)| c.as_str()).collect();
                anyhow::bail!(
                    "error: container {container:?} is not valid for pod {}; choose one of: {}",
                    pod.name,
                    names.join(", ")
                );
            };
            match std::fs::read_to_string(file) {
                Ok(text) => print!("{text}"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => anyhow::bail!("error: cannot read {file}: {e}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec {
            name,
            namespace,
            command,
        } => {
            let pod = locate(name, namespace).await?;
            let (program, args) = command
                .split_first()
                .ok_or_else(|| anyhow::anyhow!("error: no command given"))?;
            let status = std::process::Command::new(program)
                .args(args)
                .envs(pod.env.iter().map(|(k, v)| (k, v)))
                .status()
                .map_err(|e| anyhow::anyhow!("error: cannot run {program}: {e}"))?;
            Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ))
        }
        Command::Analyze(args) => analyze_cmd::run(args).await,
        Command::App { name } => {
            meshbox_apps::main_for(&name).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Metrics { name, namespace } => {
            let dir = meshbox_runtime::paths::state_dir();
            let file = meshbox_runtime::paths::admin_address_file(&dir);
            let addr = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("error: no running mesh ({}: {e})", file.display()))?;
            let path = match name {
                None => meshbox_runtime::admin::METRICS_PATH.to_string(),
                Some(name) => {
                    let pod = locate(name, namespace).await?;
                    format!(
                        "{}/{}/{}",
                        meshbox_runtime::admin::METRICS_PATH,
                        pod.namespace,
                        pod.name
                    )
                }
            };
            print!("{}", http_get_body(addr.trim(), &path)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Trace(args) => trace_cmd::run(args).await,
        Command::ProxyConfig(args) => proxy_config_cmd::run(args).await,
    }
}

/// `GET path` from a local HTTP server over a fresh connection; the body.
fn http_get_body(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr)
        .map_err(|e| anyhow::anyhow!("error: cannot reach the metrics listener {addr}: {e}"))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    Ok(raw
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

async fn locate(
    name: String,
    namespace: Option<String>,
) -> anyhow::Result<meshbox_runtime::PodLocation> {
    let r = control(ControlRequest::Locate { name, namespace })
        .await
        .map_err(anyhow::Error::msg)?;
    if !r.ok {
        anyhow::bail!("{}", r.error);
    }
    r.pod
        .ok_or_else(|| anyhow::anyhow!("error: the mesh did not say where the pod is"))
}

async fn respond(request: ControlRequest) -> anyhow::Result<ExitCode> {
    let r = control(request).await.map_err(anyhow::Error::msg)?;
    print!("{}", r.output);
    if r.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("{}", r.error);
        if !r.error.ends_with('\n') {
            eprintln!();
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Reads `-f` arguments: files, directories, or `-` for standard input.
fn read_files(files: &[String]) -> anyhow::Result<Vec<Source>> {
    let mut sources = Vec::new();
    let mut paths = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            sources.push(Source {
                name: "STDIN".into(),
                text,
            });
        } else {
            paths.push(PathBuf::from(f));
        }
    }
    if !paths.is_empty() {
        sources.extend(meshbox_config::read_sources(&paths)?);
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    /// The runtime keeps its own list of built-in apps (to stay free of the apps
    /// crate); it must name exactly the apps `meshbox app` can run.
    #[test]
    fn runtime_knows_every_built_in_app() {
        assert_eq!(
            meshbox_runtime::images::meshbox_apps_names(),
            meshbox_apps::app_names()
        );
    }
}
