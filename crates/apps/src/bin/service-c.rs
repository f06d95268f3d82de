//! ServiceC: greets and calls `http://worldtimeapi.org/api/timezone/Europe`.
#![forbid(unsafe_code)]

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    meshbox_apps::main_for("service-c").await
}
