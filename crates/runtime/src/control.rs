//! The control API of a running mesh: one JSON request and one JSON response per
//! connection, over a Unix socket that only the owner can open.

use serde::{Deserialize, Serialize};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use meshbox_config::Source;

/// A request to the running mesh.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// `meshbox analyze` without files: istioctl analyze's checks of the applied
    /// config, its running pods and gateways. The answer's output is the messages as
    /// JSON (`Vec<meshbox_routing::analyze::Message>`), sorted.
    Analyze {
        /// `-n`: only messages about objects in it; `None`: `default`, as istioctl.
        namespace: Option<String>,
        /// `-A`: every namespace.
        #[serde(default)]
        all_namespaces: bool,
    },
    /// `meshbox apply -f`.
    Apply {
        /// The manifests, as read by the client (files, directories or standard input).
        sources: Vec<Source>,
        /// `-n`: every object must be in it; `None`: the mesh's default namespace for
        /// objects that name none.
        namespace: Option<String>,
        /// `meshbox.images` files found beside the manifests.
        #[serde(default)]
        images: Vec<Source>,
    },
    /// `meshbox delete -f`.
    Delete {
        /// The manifests, as read by the client (files, directories or standard input).
        sources: Vec<Source>,
        /// `-n`: every object must be in it; `None`: the mesh's default namespace for
        /// objects that name none.
        namespace: Option<String>,
    },
    /// `meshbox get KIND [NAME]`.
    Get {
        /// The kind as kubectl abbreviates it (`vs`, `dr`, `se`, `gw`, `svc`, `deploy`,
        /// ...) or `pods`.
        kind: String,
        /// Only the object with this name.
        name: Option<String>,
        /// `-n`; `None`: `default`, as with kubectl.
        namespace: Option<String>,
        /// `-A`: every namespace.
        all_namespaces: bool,
        /// `-o yaml` or `-o json`; `None`: a table.
        output: Option<String>,
    },
    /// `meshbox install --set ...`: replaces the install flags.
    Install {
        /// The `--set` flags, as `istioctl install` takes them.
        set: Vec<String>,
    },
    /// The environment and pod of a Deployment's first replica (for `exec`) or the
    /// log files of a pod, gateway or deployment (for `logs`).
    Locate {
        /// A pod, Deployment or gateway name (or the start of a pod name).
        name: String,
        /// `-n`; `None`: any namespace.
        namespace: Option<String>,
    },
    /// `meshbox trace`: how one proxy routes a request, step by step.
    Trace {
        /// The pod, Deployment or gateway whose proxy sends (sidecar) or receives
        /// (gateway) the request.
        from: String,
        /// `-n`: where to look first; `None`: any namespace.
        namespace: Option<String>,
        /// The request.
        request: meshbox_routing::trace::TraceRequest,
        /// `-o json`; `None`: plain words.
        output: Option<String>,
    },
    /// `meshbox proxy-config routes|clusters|listeners|endpoints NAME`.
    ProxyConfig {
        /// `routes`, `clusters`, `listeners`, `endpoints` or `all`.
        view: String,
        /// A pod, Deployment or gateway name.
        name: String,
        /// `-n`: where to look first; `None`: any namespace.
        namespace: Option<String>,
        /// `-o json`; `None`: a table.
        output: Option<String>,
    },
}

/// The answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ControlResponse {
    /// Whether the request succeeded; the CLI exits non-zero when not.
    pub ok: bool,
    /// What to print on standard output.
    #[serde(default)]
    pub output: String,
    /// What to print on standard error when not ok.
    #[serde(default)]
    pub error: String,
    /// For `Locate`: the pod found.
    #[serde(default)]
    pub pod: Option<PodLocation>,
}

/// Where a pod's pieces are, for `exec` and `logs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PodLocation {
    /// The pod's name.
    pub name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// Environment a process inside the pod sees (its sidecar as HTTP_PROXY).
    pub env: Vec<(String, String)>,
    /// Log files by container name (`istio-proxy` for the proxy).
    pub logs: Vec<(String, String)>,
}

impl ControlResponse {
    /// A success with output.
    pub fn ok(output: impl Into<String>) -> Self {
        ControlResponse {
            ok: true,
            output: output.into(),
            ..Default::default()
        }
    }

    /// A failure with a message.
    pub fn err(error: impl Into<String>) -> Self {
        ControlResponse {
            ok: false,
            error: error.into(),
            ..Default::default()
        }
    }
}

/// Sends one request to the mesh whose socket is at `socket`.
pub async fn call(socket: &Path, request: &ControlRequest) -> Result<ControlResponse, String> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        format!(
            "no running mesh at {} ({e}); start one with `meshbox up`, or set MESHBOX_HOME to the mesh's state directory",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    write
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("control socket: {e}"))?;
    write
        .shutdown()
        .await
        .map_err(|e| format!("control socket: {e}"))?;
    let mut reader = BufReader::new(read);
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .await
        .map_err(|e| format!("control socket: {e}"))?;
    serde_json::from_str(&answer).map_err(|e| format!("control socket: bad answer: {e}"))
}
