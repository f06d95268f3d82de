//! Runs one container as a child process, restarting it with backoff when it exits,
//! as the kubelet restarts a pod's container; stops its whole process group.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// What to start, with what environment, logging where.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the inherited environment (PORT, HTTP_PROXY, the container's `env`, ...).
    pub env: Vec<(String, String)>,
    /// Directory to start in; `None`: meshbox's own.
    pub working_dir: Option<PathBuf>,
    /// File that receives stdout, stderr and the supervisor's notes (what `logs -c
    /// CONTAINER` prints).
    pub log_file: PathBuf,
}

/// What a container is doing, as `get pods` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Being started (`ContainerCreating`).
    Starting,
    /// The process is running (`Running`).
    Running,
    /// Exited; waiting out the backoff before the next start.
    BackOff,
    /// Stopped or being stopped (`Terminating`).
    Stopped,
}

impl ContainerState {
    /// kubectl's word.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Starting => "ContainerCreating",
            ContainerState::Running => "Running",
            ContainerState::BackOff => "CrashLoopBackOff",
            ContainerState::Stopped => "Terminating",
        }
    }
}

/// A supervised container; dropping it does not stop it: call [`Supervised::stop`].
pub struct Supervised {
    /// How many times the container exited or failed to start (`RESTARTS` in `get pods`).
    pub restarts: Arc<AtomicU32>,
    /// The current state, kept up to date by the supervising task.
    pub state: Arc<Mutex<ContainerState>>,
    stop_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    /// Starts the process and keeps it running.
    pub fn start(spec: ProcessSpec) -> Supervised {
        let restarts = Arc::new(AtomicU32::new(0));
        let state = Arc::new(Mutex::new(ContainerState::Starting));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(spec, restarts.clone(), state.clone(), stop_rx));
        Supervised {
            restarts,
            state,
            stop_tx,
            task,
        }
    }

    /// The current state.
    pub fn current_state(&self) -> ContainerState {
        self.state
            .lock()
            .map(|s| *s)
            .unwrap_or(ContainerState::Stopped)
    }

    /// Stops the process (SIGTERM to its group, SIGKILL after a grace period) and
    /// waits until it is gone.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.task.await;
    }
}

const GRACE: Duration = Duration::from_secs(3);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

async fn supervise(
    spec: ProcessSpec,
    restarts: Arc<AtomicU32>,
    state: Arc<Mutex<ContainerState>>,
    mut stop_rx: watch::Receiver<bool>,
) {
    let set = |s: ContainerState| {
        if let Ok(mut g) = state.lock() {
            *g = s;
        }
    };
    let mut backoff = BACKOFF_START;
    loop {
        if *stop_rx.borrow() {
            break;
        }
        set(ContainerState::Starting);
        let mut child = match spawn(&spec).await {
            Ok(c) => c,
            Err(e) => {
                note(
                    &spec,
                    &format!("meshbox: cannot start {}: {e}", spec.program.display()),
                )
                .await;
                set(ContainerState::BackOff);
                restarts.fetch_add(1, Ordering::Relaxed);
                if wait_or_stop(&mut stop_rx, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        set(ContainerState::Running);
        let started = tokio::time::Instant::now();
        tokio::select! {
            status = child.wait() => {
                let what = match status {
                    Ok(s) => format!("exited with {s}"),
                    Err(e) => format!("wait failed: {e}"),
                };
                note(&spec, &format!("meshbox: container {what}; restarting after {} ms", backoff.as_millis())).await;
                set(ContainerState::BackOff);
                restarts.fetch_add(1, Ordering::Relaxed);
                // A container that ran for a while starts its backoff afresh.
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = BACKOFF_START;
                }
                if wait_or_stop(&mut stop_rx, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            _ = stop_rx.changed() => {
                terminate(&mut child).await;
                break;
            }
        }
    }
    set(ContainerState::Stopped);
}

/// Waits for the backoff; true when asked to stop meanwhile.
async fn wait_or_stop(stop_rx: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *stop_rx.borrow(),
        _ = stop_rx.changed() => true,
    }
}

async fn note(spec: &ProcessSpec, line: &str) {
    if let Ok(mut f) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_file)
        .await
    {
        let _ = f.write_all(format!("{line}\n").as_bytes()).await;
    }
}

async fn spawn(spec: &ProcessSpec) -> std::io::Result<Child> {
    if let Some(parent) = spec.log_file.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_file)?;
    let log_err = log.try_clone()?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    crate::orphans::die_with_parent(&mut cmd);
    cmd.spawn()
}

/// SIGTERM to the child's process group, then SIGKILL after the grace period.
pub async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        if tokio::time::timeout(GRACE, child.wait()).await.is_ok() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            return;
        }
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill().await;
    let _ = child.wait().await;
}
