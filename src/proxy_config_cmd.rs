//! `meshbox proxy-config routes|clusters|listeners|endpoints NAME`: one proxy's compiled
//! tables, from the running mesh (a control request) or offline on manifests (`-f`).

use std::process::ExitCode;

use meshbox_routing::dump::View;
use meshbox_runtime::ControlRequest;

use crate::trace_cmd::Offline;

/// Arguments of `meshbox proxy-config`.
#[derive(clap::Args)]
pub struct ProxyConfigArgs {
    /// routes, clusters, listeners, endpoints (or all).
    pub view: String,
    /// Pod, Deployment or gateway name.
    pub name: String,
    /// Namespace of NAME (and, with -f, of objects that name none). A name not found
    /// there is looked up in every namespace.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// `json` for the rows as JSON; a table otherwise.
    #[arg(short, long)]
    pub output: Option<String>,
    /// Build the tables offline from these manifests (files, directories, or -) instead
    /// of asking the running mesh.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// With -f: install options as istioctl spells them.
    #[arg(long = "set")]
    pub set: Vec<String>,
}

/// Runs `meshbox proxy-config`.
pub async fn run(args: ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    let view = View::parse(&args.view).map_err(anyhow::Error::msg)?;
    if args.files.is_empty() {
        if !args.set.is_empty() {
            anyhow::bail!(
                "error: --set applies to offline tables (-f); the running mesh uses its own install options"
            );
        }
        return crate::respond(ControlRequest::ProxyConfig {
            view: args.view,
            name: args.name,
            namespace: args.namespace,
            output: args.output,
        })
        .await;
    }
    let offline = Offline::load(&args.files, args.namespace.as_deref(), &args.set)?;
    let config = offline.proxy_config(&args.name, args.namespace.as_deref())?;
    let text = meshbox_routing::dump::render(&config, view, args.output.as_deref())
        .map_err(anyhow::Error::msg)?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
