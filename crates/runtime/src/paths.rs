//! Where a running mesh keeps its control socket and logs.

use std::path::{Path, PathBuf};

/// The state directory: `$MESHBOX_HOME`, else `$XDG_RUNTIME_DIR/meshbox`, else
/// `$HOME/.meshbox`. One mesh runs per state directory.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MESHBOX_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("meshbox");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".meshbox")
}

/// The control socket inside a state directory.
pub fn control_socket(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// Where `meshbox up` writes the admin listener's address (the metrics endpoints).
pub fn admin_address_file(dir: &Path) -> PathBuf {
    dir.join("admin.addr")
}

/// The log file of one container of one pod.
pub fn log_file(dir: &Path, namespace: &str, pod: &str, container: &str) -> PathBuf {
    dir.join("logs")
        .join(format!("{namespace}.{pod}.{container}.log"))
}
