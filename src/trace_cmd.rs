//! `meshbox trace`: against the running mesh (a control request), or offline on a set
//! of manifests (`-f`), where the mesh is built in memory: the objects, the install
//! options, and would-be pods from the Deployments' templates at placeholder addresses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use meshbox_config::mesh::parse_set_flags;
use meshbox_config::{load_sources, Kind, LoadOptions, MeshOptions, Spec, Store};
use meshbox_routing::dump::{ListenerRole, ProxyConfig, ProxyListener};
use meshbox_routing::trace::{Trace, TraceContext, TraceRequest};
use meshbox_routing::{MeshState, ProxyTables, WorkloadInstance};
use meshbox_runtime::ControlRequest;

/// Arguments of `meshbox trace`.
#[derive(clap::Args)]
pub struct TraceArgs {
    /// The URL, as curl takes it: http://HOST[:PORT]/PATH (the port picks the route table).
    pub url: String,
    /// The Deployment, pod or gateway whose proxy handles the request: a workload's
    /// sidecar sends it; a gateway receives it.
    #[arg(long)]
    pub from: String,
    /// Namespace of --from (and, with -f, of objects that name none). A name not found
    /// there is looked up in every namespace.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The request method.
    #[arg(short = 'X', long = "request", default_value = "GET")]
    pub method: String,
    /// A request header, 'Name: value' (repeatable); at a gateway, Host picks the virtual host.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Trace offline on these manifests (files, directories, or - for stdin) instead of
    /// the running mesh; each -f is applied in turn, a later one replacing what an
    /// earlier one defined.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// With -f: install options as istioctl spells them (e.g. meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY).
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// `json` for the structured trace; plain words otherwise.
    #[arg(short, long)]
    pub output: Option<String>,
}

/// Runs `meshbox trace`.
pub async fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let request =
        TraceRequest::parse(&args.method, &args.url, &args.headers).map_err(anyhow::Error::msg)?;
    if args.files.is_empty() {
        if !args.set.is_empty() {
            anyhow::bail!(
                "error: --set applies to an offline trace (-f); the running mesh uses its own install options"
            );
        }
        return crate::respond(ControlRequest::Trace {
            from: args.from,
            namespace: args.namespace,
            request,
            output: args.output,
        })
        .await;
    }
    let offline = Offline::load(&args.files, args.namespace.as_deref(), &args.set)?;
    let trace = offline.trace(&args.from, args.namespace.as_deref(), &request)?;
    let text = meshbox_routing::trace::render_as(&trace, args.output.as_deref())
        .map_err(anyhow::Error::msg)?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// A mesh built in memory from manifests, as `meshbox up` would run it.
pub struct Offline {
    store: Store,
    options: MeshOptions,
    pods: Vec<OfflinePod>,
}

/// A would-be pod: a Deployment replica or an installed gateway.
struct OfflinePod {
    instance: WorkloadInstance,
    /// The Deployment or gateway name.
    owner: String,
    /// For gateways: (container port, Service port) of each listener.
    gateway_ports: Option<Vec<(u32, u32)>>,
    /// The placeholder IP of the pod.
    ip: [u8; 4],
}

impl Offline {
    /// Loads the manifests (`-f`), computes the install options (IstioOperator documents
    /// among them, then `--set`), and makes the would-be pods: each Deployment's replicas
    /// and each enabled gateway, at placeholder addresses `10.0.0.N:PORT`.
    pub fn load(
        files: &[String],
        namespace: Option<&str>,
        set: &[String],
    ) -> anyhow::Result<Offline> {
        let opts = LoadOptions {
            namespace: namespace.unwrap_or("default").to_string(),
            namespace_explicit: false,
        };
        // Each -f is one `apply`, in order: a later file replaces an object an earlier
        // one defined, as successive `kubectl apply -f` do.
        let mut store = Store::new();
        for f in files {
            let sources = crate::read_files(std::slice::from_ref(f))?;
            let resources = load_sources(&sources, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
            store.apply(resources);
        }
        let mut layers = Vec::new();
        for r in store.of_kind(Kind::IstioOperator) {
            if let Spec::IstioOperator(v) = &r.spec {
                layers.push(v.clone());
            }
        }
        layers.push(parse_set_flags(set).map_err(anyhow::Error::msg)?);
        let options = MeshOptions::from_layers(&layers).map_err(anyhow::Error::msg)?;
        let mut pods = Vec::new();
        let mut next_ip = 1u32;
        let mut ip = || {
            let n = next_ip;
            next_ip += 1;
            [10, 0, (n >> 8) as u8, (n & 0xff) as u8]
        };
        for gw in options.enabled_gateways() {
            let ip = ip();
            let ports: Vec<(u32, u32)> = gw
                .service_ports()
                .iter()
                .filter(|(_, port, _)| *port != 15021)
                .map(|(_, port, target)| (*target, *port))
                .collect();
            let mut labels = gw.labels.clone();
            labels.insert("service.istio.io/canonical-name".into(), gw.name.clone());
            pods.push(OfflinePod {
                instance: WorkloadInstance {
                    name: format!("{}-0", gw.name),
                    namespace: gw.namespace.clone(),
                    labels,
                    inbound: ports
                        .iter()
                        .map(|(target, _)| (*target, placeholder(ip, *target)))
                        .collect(),
                    named_ports: BTreeMap::new(),
                },
                owner: gw.name.clone(),
                gateway_ports: Some(ports),
                ip,
            });
        }
        for d in store.of_kind(Kind::Deployment) {
            let Spec::Deployment(spec) = &d.spec else {
                continue;
            };
            for i in 0..spec.replicas.unwrap_or(1) {
                let ip = ip();
                let mut inbound = BTreeMap::new();
                let mut named_ports = BTreeMap::new();
                for c in &spec.template.spec.containers {
                    for p in &c.ports {
                        inbound.insert(p.container_port, placeholder(ip, p.container_port));
                        if let Some(n) = &p.name {
                            named_ports.insert(n.clone(), p.container_port);
                        }
                    }
                }
                pods.push(OfflinePod {
                    instance: WorkloadInstance {
                        name: format!("{}-{i}", d.metadata.name),
                        namespace: d.namespace().to_string(),
                        labels: spec.template.metadata.labels.clone(),
                        inbound,
                        named_ports,
                    },
                    owner: d.metadata.name.clone(),
                    gateway_ports: None,
                    ip,
                });
            }
        }
        Ok(Offline {
            store,
            options,
            pods,
        })
    }

    /// The pod named `name`, or the first of the Deployment or gateway so named: in
    /// `namespace` first, then anywhere.
    fn find(&self, name: &str, namespace: Option<&str>) -> anyhow::Result<&OfflinePod> {
        let find = |ns: Option<&str>| {
            let in_ns = |p: &&OfflinePod| ns.is_none_or(|ns| p.instance.namespace == ns);
            let pods = || self.pods.iter().filter(in_ns);
            pods()
                .find(|p| p.instance.name == name)
                .or_else(|| pods().find(|p| p.owner == name))
                .or_else(|| pods().find(|p| p.instance.name.starts_with(name)))
        };
        if let Some(p) = find(namespace).or_else(|| find(None)) {
            return Ok(p);
        }
        let mut known: Vec<String> = self
            .pods
            .iter()
            .map(|p| format!("{} (namespace {})", p.owner, p.instance.namespace))
            .collect();
        known.dedup();
        anyhow::bail!(
            "error: no Deployment or gateway named {name:?} in these manifests; there are: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    }

    fn workloads(&self) -> Vec<WorkloadInstance> {
        self.pods.iter().map(|p| p.instance.clone()).collect()
    }

    fn tables(state: &MeshState<'_>, pod: &OfflinePod) -> ProxyTables {
        match &pod.gateway_ports {
            Some(ports) => state.gateway_tables(&pod.instance, ports),
            None => state.sidecar_tables(&pod.instance),
        }
    }

    /// The trace of `request` at the proxy of `from`.
    pub fn trace(
        &self,
        from: &str,
        namespace: Option<&str>,
        request: &TraceRequest,
    ) -> anyhow::Result<Trace> {
        let pod = self.find(from, namespace)?;
        let workloads = self.workloads();
        let state = MeshState::new(&self.store, &self.options, &workloads);
        let tables = Self::tables(&state, pod);
        let ctx = TraceContext {
            state: &state,
            proxy: &pod.instance,
        };
        Ok(meshbox_routing::trace::trace(&tables, request, Some(&ctx)))
    }

    /// The proxy-config views of the proxy of `name`.
    pub fn proxy_config(&self, name: &str, namespace: Option<&str>) -> anyhow::Result<ProxyConfig> {
        let pod = self.find(name, namespace)?;
        let workloads = self.workloads();
        let state = MeshState::new(&self.store, &self.options, &workloads);
        let tables = Self::tables(&state, pod);
        let listeners: Vec<ProxyListener> = match &pod.gateway_ports {
            Some(ports) => ports
                .iter()
                .map(|(container_port, service_port)| ProxyListener {
                    address: placeholder(pod.ip, *container_port).to_string(),
                    role: ListenerRole::Gateway {
                        container_port: *container_port,
                        service_port: *service_port,
                    },
                })
                .collect(),
            None => std::iter::once(ProxyListener {
                // Istio's outbound capture port.
                address: placeholder(pod.ip, 15001).to_string(),
                role: ListenerRole::SidecarOutbound,
            })
            .chain(
                pod.instance
                    .inbound
                    .iter()
                    .map(|(port, addr)| ProxyListener {
                        address: addr.to_string(),
                        role: ListenerRole::SidecarInbound {
                            port: *port,
                            app: Some(format!("127.0.0.1:{port}")),
                        },
                    }),
            )
            .collect(),
        };
        Ok(meshbox_routing::dump::proxy_config(&tables, &listeners))
    }
}

fn placeholder(ip: [u8; 4], port: u32) -> SocketAddr {
    SocketAddr::from((ip, u16::try_from(port).unwrap_or(0)))
}
