//! `meshbox analyze`: istioctl analyze's checks, on files or on the running mesh.

use std::process::ExitCode;

use meshbox_routing::analyze::{self, Message};
use meshbox_runtime::{control, ControlRequest};

/// istioctl's exit code when the analyzers found an error.
const EXIT_ANALYZER_FOUND_ISSUES: u8 = 79;

/// Arguments of `meshbox analyze`.
#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// Manifest files or directories to analyze (`-` for standard input), and nothing
    /// else; without any, the running mesh's config, pods and gateways.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    /// Report on this namespace (also the namespace of file objects that name none).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Report on every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
}

/// Prints the messages as `istioctl analyze` does; exits 79 when one is an error.
pub async fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let namespace = args.namespace.clone().unwrap_or_else(|| "default".into());
    let messages: Vec<Message> = if args.files.is_empty() {
        let r = control(ControlRequest::Analyze {
            namespace: args.namespace.clone(),
            all_namespaces: args.all_namespaces,
        })
        .await
        .map_err(anyhow::Error::msg)?;
        if !r.ok {
            anyhow::bail!("{}", r.error.trim_end());
        }
        serde_json::from_str(&r.output)
            .map_err(|e| anyhow::anyhow!("error: the mesh's analysis is unreadable: {e}"))?
    } else {
        let sources = crate::read_files(&args.files)?;
        let result = analyze::analyze_sources(&sources, &namespace);
        for note in &result.skipped {
            eprintln!("meshbox: {note}");
        }
        result.messages
    };
    let scope = (!args.all_namespaces).then_some(namespace.as_str());
    let messages = analyze::sorted(analyze::in_namespace(messages, scope));
    let target = if args.all_namespaces {
        "all namespaces".to_string()
    } else {
        format!("namespace: {namespace}")
    };
    for m in &messages {
        println!("{m}");
    }
    if messages.is_empty() {
        eprintln!("\u{2714} No validation issues found when analyzing {target}.");
    }
    if analyze::has_errors(&messages) {
        eprintln!("Error: Analyzers found issues when analyzing {target}.");
        eprintln!("See https://istio.io/latest/docs/reference/config/analysis for more information about causes and resolutions.");
        return Ok(ExitCode::from(EXIT_ANALYZER_FOUND_ISSUES));
    }
    Ok(ExitCode::SUCCESS)
}
