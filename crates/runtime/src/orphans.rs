//! Children die with meshbox even if it is killed with SIGKILL: Linux's
//! parent-death signal, set in the child between fork and exec.

use tokio::process::Command;

/// Makes the child receive SIGKILL when the meshbox process that started it dies.
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl(PR_SET_PDEATHSIG), which is async-signal-safe and touches no memory of
    // the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}
