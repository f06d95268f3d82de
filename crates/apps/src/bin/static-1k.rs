//! static-1k: answers every request with the same 1 KB body (a benchmark upstream).
#![forbid(unsafe_code)]

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    meshbox_apps::main_for("static-1k").await
}
