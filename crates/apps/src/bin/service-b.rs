//! ServiceB: the producer, answers `Hello from ServiceB!`.
#![forbid(unsafe_code)]

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    meshbox_apps::main_for("service-b").await
}
