//! worldtime: a local stand-in for worldtimeapi.org.
#![forbid(unsafe_code)]

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    meshbox_apps::main_for("worldtime").await
}
