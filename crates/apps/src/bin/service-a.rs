//! ServiceA: greets and calls the producer (`http://producer-internal-host:80/`).
#![forbid(unsafe_code)]

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    meshbox_apps::main_for("service-a").await
}
