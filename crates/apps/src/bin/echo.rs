//! echo: answers every request with a description of the request it received.
#![forbid(unsafe_code)]

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    meshbox_apps::main_for("echo").await
}
