//! The local mesh: applied config, the gateways and the pods (sidecar proxy and
//! containers) it runs, and the reconcile step that follows every change.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use meshbox_config::mesh::parse_set_flags;
use meshbox_config::{
    load_sources, GatewayComponent, Kind, LoadError, LoadErrors, LoadOptions, MeshOptions,
    Resource, Source, Spec, Store,
};
use meshbox_proxy::{AccessLogSink, Encoding, ListenerRole, Proxy, ProxySettings, Resolver};
use meshbox_routing::{MeshState, WorkloadInstance};

use crate::images::{ImageMap, LocalCommand};
use crate::paths::log_file;
use crate::ports::{proxy_listener, PortReservation, REUSEPORT_ENV};
use crate::supervisor::{ContainerState, ProcessSpec, Supervised};

/// Settings fixed for the life of a mesh.
pub struct MeshSettings {
    /// State directory (logs, socket).
    pub dir: PathBuf,
    /// Namespace for objects that name none.
    pub default_namespace: String,
    /// `--set` flags.
    pub set_flags: Vec<String>,
    /// Image-to-command mappings (`meshbox.images`); `apply` may add more.
    pub images: ImageMap,
    /// Name resolver shared by every proxy, with the `--resolve`, `--connect-to` and
    /// `--stand-in` overrides.
    pub resolver: Arc<Resolver>,
    /// Port for the ingress gateway's HTTP port 80 (0: any free port).
    pub ingress_port: u16,
    /// Seed for the proxies' weighted choices.
    pub seed: u64,
    /// The meshbox executable, which runs the built-in apps.
    pub exe: PathBuf,
    /// The worker threads that serve the proxies (`meshbox up`: single-threaded
    /// runtimes of their own, so that control-plane work never shares their threads).
    /// Empty (the default): the current runtime.
    pub workers: meshbox_proxy::Workers,
}

/// One running pod (a Deployment replica or a gateway).
struct Pod {
    instance: WorkloadInstance,
    /// Deployment or gateway name.
    owner: String,
    template_hash: String,
    gateway: Option<GatewayComponent>,
    proxy: Arc<Proxy>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
    containers: Vec<(String, Supervised)>,
    /// The app ports this pod holds (see `ports`), freed when the pod is dropped.
    reserved_ports: Vec<PortReservation>,
    /// Environment of the app containers (what `exec` reproduces).
    env: Vec<(String, String)>,
    /// Service ports of a gateway: (container port, service port).
    gateway_ports: Vec<(u32, u32)>,
    created: Instant,
    log_writer: Option<tokio::task::JoinHandle<()>>,
    /// The (accessLogFile, accessLogEncoding) its proxy was given.
    log_options: (String, String),
}

/// An access log sink with the task that drains it.
struct AccessLogWiring {
    sink: Arc<dyn AccessLogSink>,
    encoding: Encoding,
    writer: tokio::task::JoinHandle<()>,
}

/// The mesh.
pub struct Mesh {
    settings: MeshSettings,
    store: Store,
    options: MeshOptions,
    pods: BTreeMap<(String, String), Pod>,
    pod_counter: u64,
    /// Each running proxy's metrics, for the admin listener.
    metrics_index: crate::admin::MetricsIndex,
}

/// An object that could not be applied, with where it came from.
fn object_error(r: &Resource, field: &str, message: String) -> LoadError {
    LoadError {
        file: r.origin.file.clone(),
        document: Some(r.origin.document),
        object: Some(format!("{}/{}", r.kind, r.metadata.name)),
        field: Some(field.to_string()),
        line: Some(r.origin.line),
        column: None,
        message,
    }
}

/// The secrets that a VirtualService's header values name (`${file:PATH}`,
/// `${env:NAME}`) and that cannot be read now, each as an error naming the field.
fn header_secret_errors(r: &Resource) -> Vec<LoadError> {
    let Spec::VirtualService(vs) = &r.spec else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let mut check = |field: String, headers: Option<&meshbox_config::istio::Headers>| {
        let Some(h) = headers else { return };
        for (dir, ops) in [("request", &h.request), ("response", &h.response)] {
            let Some(ops) = ops else { continue };
            for (op, entries) in [("set", &ops.set), ("add", &ops.add)] {
                for (k, v) in entries {
                    if let Err(e) = meshbox_routing::policy::expand_secret_template(
                        v,
                        &mut meshbox_routing::policy::read_secret,
                    ) {
                        errors.push(object_error(
                            r,
                            &format!("{field}.headers.{dir}.{op}.{k}"),
                            e,
                        ));
                    }
                }
            }
        }
    };
    for (i, rule) in vs.http.iter().enumerate() {
        check(format!("spec.http[{i}]"), rule.headers.as_ref());
        for (j, d) in rule.route.iter().enumerate() {
            check(format!("spec.http[{i}].route[{j}]"), d.headers.as_ref());
        }
    }
    errors
}

impl Mesh {
    /// An empty mesh with the install options from `--set`.
    pub fn new(settings: MeshSettings) -> Result<Mesh, String> {
        let options = compute_options(&Store::new(), &settings.set_flags)?;
        Ok(Mesh {
            settings,
            store: Store::new(),
            options,
            pods: BTreeMap::new(),
            pod_counter: 0,
            metrics_index: Default::default(),
        })
    }

    /// Each running proxy's metrics by (namespace, pod), as the admin listener serves
    /// them; kept current by `reconcile`.
    pub fn metrics_index(&self) -> crate::admin::MetricsIndex {
        self.metrics_index.clone()
    }

    /// The install options in force.
    pub fn options(&self) -> &MeshOptions {
        &self.options
    }

    /// The address of the ingress gateway's port 80, once running.
    pub fn ingress_address(&self) -> Option<SocketAddr> {
        self.pods.values().find_map(|p| {
            let gw = p.gateway.as_ref()?;
            if gw.role != meshbox_config::GatewayRole::Ingress {
                return None;
            }
            p.instance.inbound.get(&8080).copied()
        })
    }

    /// The apps' addresses, to wait for at startup.
    pub fn app_addresses(&self) -> Vec<(String, SocketAddr)> {
        let mut out = Vec::new();
        for p in self.pods.values().filter(|p| p.gateway.is_none()) {
            for (k, v) in &p.env {
                if k == "PORT" {
                    if let Ok(port) = v.parse::<u16>() {
                        out.push((
                            p.instance.name.clone(),
                            SocketAddr::from(([127, 0, 0, 1], port)),
                        ));
                    }
                }
            }
        }
        out
    }

    /// `apply`: all objects or none; then the mesh follows.
    pub async fn apply(
        &mut self,
        sources: &[Source],
        namespace: Option<String>,
    ) -> Result<String, String> {
        let opts = self.load_options(namespace);
        let resources =
            off_the_data_plane(|| load_sources(sources, &opts)).map_err(|e| e.to_string())?;
        let mut errors = Vec::new();
        for r in &resources {
            if let Spec::Deployment(d) = &r.spec {
                for (i, c) in d.template.spec.containers.iter().enumerate() {
                    if let Err(e) =
                        self.settings
                            .images
                            .resolve(c.image.as_deref(), &c.command, &c.args)
                    {
                        errors.push(object_error(
                            r,
                            &format!("spec.template.spec.containers[{i}].image"),
                            e,
                        ));
                    }
                }
            }
        }
        for r in &resources {
            errors.extend(header_secret_errors(r));
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors).to_string());
        }
        let warnings: Vec<String> = resources
            .iter()
            .flat_map(meshbox_routing::unsupported::unsupported_features)
            .collect();
        let mut next = self.store.clone();
        let outcomes = next.apply(resources);
        self.commit(next).await?;
        let mut out: String = warnings.iter().map(|w| format!("{w}\n")).collect();
        for (k, a) in &outcomes {
            out.push_str(&format!(
                "{}/{} {}\n",
                k.kind.resource_name(),
                k.name,
                a.as_str()
            ));
        }
        Ok(out)
    }

    /// `apply` with image mappings that came with the manifests; the mappings are kept
    /// only if the apply succeeds.
    pub async fn apply_with_images(
        &mut self,
        sources: &[Source],
        namespace: Option<String>,
        images: &[Source],
    ) -> Result<String, String> {
        let previous = self.settings.images.clone();
        for f in images {
            if let Err(e) = self.settings.images.load_text(Path::new(&f.name), &f.text) {
                self.settings.images = previous;
                return Err(e);
            }
        }
        let result = self.apply(sources, namespace).await;
        if result.is_err() {
            self.settings.images = previous;
        }
        result
    }

    /// `delete -f`: removes the objects the files define.
    pub async fn delete(
        &mut self,
        sources: &[Source],
        namespace: Option<String>,
    ) -> Result<String, String> {
        let opts = self.load_options(namespace);
        let resources =
            off_the_data_plane(|| load_sources(sources, &opts)).map_err(|e| e.to_string())?;
        let mut next = self.store.clone();
        let mut out = String::new();
        let mut missing = String::new();
        for r in resources {
            let key = r.key();
            match next.delete(&key) {
                Some(_) => out.push_str(&format!(
                    "{}/{} deleted\n",
                    key.kind.resource_name(),
                    key.name
                )),
                None => missing.push_str(&format!(
                    "Error from server (NotFound): {} {:?} not found in namespace {:?}\n",
                    key.kind.resource_name(),
                    key.name,
                    key.namespace
                )),
            }
        }
        self.commit(next).await?;
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(format!("{out}{missing}"))
        }
    }

    /// Makes `next` the applied config (if its install options are valid) and follows it.
    async fn commit(&mut self, next: Store) -> Result<(), String> {
        self.options = compute_options(&next, &self.settings.set_flags)?;
        self.store = next;
        self.reconcile().await;
        Ok(())
    }

    /// `install --set ...`: replaces the install flags and reconciles.
    pub async fn install(&mut self, set: Vec<String>) -> Result<String, String> {
        let options = compute_options(&self.store, &set)?;
        self.settings.set_flags = set;
        self.options = options;
        self.reconcile().await;
        Ok(format!(
            "✔ Installation complete: outboundTrafficPolicy {:?}, accessLogFile {:?}, gateways: {}\n",
            self.options.outbound_policy,
            self.options.access_log_file,
            self.options.enabled_gateways().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ")
        ))
    }

    fn load_options(&self, namespace: Option<String>) -> LoadOptions {
        LoadOptions {
            namespace_explicit: namespace.is_some(),
            namespace: namespace.unwrap_or_else(|| self.settings.default_namespace.clone()),
        }
    }

    /// The applied objects.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The running pods and gateways, as the control plane sees them.
    pub fn workloads(&self) -> Vec<WorkloadInstance> {
        self.pods.values().map(|p| p.instance.clone()).collect()
    }

    /// Makes the running pods and gateways match the config, then pushes new tables
    /// to every proxy; pods that go away are stopped only after no table routes to them.
    pub async fn reconcile(&mut self) {
        let mut retired: Vec<Pod> = Vec::new();
        // Gateways.
        let wanted: Vec<GatewayComponent> = self.options.enabled_gateways().cloned().collect();
        let wanted_names: BTreeSet<(String, String)> = wanted
            .iter()
            .map(|g| (g.namespace.clone(), g.name.clone()))
            .collect();
        let stale: Vec<(String, String)> = self
            .pods
            .iter()
            .filter(|(_, p)| match &p.gateway {
                Some(g) => {
                    !wanted_names.contains(&(g.namespace.clone(), g.name.clone()))
                        || Some(g)
                            != wanted
                                .iter()
                                .find(|w| w.name == g.name && w.namespace == g.namespace)
                }
                None => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(p) = self.pods.remove(&k) {
                retired.push(p);
            }
        }
        for gw in &wanted {
            let exists = self.pods.values().any(|p| p.gateway.as_ref() == Some(gw));
            if !exists {
                match self.start_gateway(gw).await {
                    Ok(pod) => {
                        self.pods.insert(
                            (pod.instance.namespace.clone(), pod.instance.name.clone()),
                            pod,
                        );
                    }
                    Err(e) => tracing::error!("cannot start gateway {}: {e}", gw.name),
                }
            }
        }
        // Deployments.
        let deployments: Vec<Resource> = self.store.of_kind(Kind::Deployment).cloned().collect();
        let mut owned: BTreeSet<(String, String)> = BTreeSet::new();
        for d in &deployments {
            let Spec::Deployment(spec) = &d.spec else {
                continue;
            };
            let ns = d.namespace().to_string();
            let hash = template_hash(&spec.template);
            let replicas = spec.replicas.unwrap_or(1) as usize;
            let mut current: Vec<(String, String)> = self
                .pods
                .iter()
                .filter(|(_, p)| {
                    p.gateway.is_none()
                        && p.owner == d.metadata.name
                        && p.instance.namespace == ns
                        && p.template_hash == hash
                })
                .map(|(k, _)| k.clone())
                .collect();
            while current.len() > replicas {
                if let Some(k) = current.pop() {
                    if let Some(p) = self.pods.remove(&k) {
                        retired.push(p);
                    }
                }
            }
            for _ in current.len()..replicas {
                match self.start_pod(d, &hash).await {
                    Ok(pod) => {
                        let key = (pod.instance.namespace.clone(), pod.instance.name.clone());
                        current.push(key.clone());
                        self.pods.insert(key, pod);
                    }
                    Err(e) => tracing::error!("cannot start a pod of {}: {e}", d.metadata.name),
                }
            }
            owned.extend(current);
        }
        let orphaned: Vec<(String, String)> = self
            .pods
            .iter()
            .filter(|(k, p)| p.gateway.is_none() && !owned.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in orphaned {
            if let Some(p) = self.pods.remove(&k) {
                retired.push(p);
            }
        }
        off_the_data_plane(|| self.push_tables());
        self.refresh_access_logs();
        for pod in retired {
            stop_pod(pod).await;
        }
    }

    /// Builds and swaps in every proxy's tables.
    fn push_tables(&self) {
        let workloads: Vec<WorkloadInstance> =
            self.pods.values().map(|p| p.instance.clone()).collect();
        let state = MeshState::new(&self.store, &self.options, &workloads);
        // Istio's metrics name the workload behind each endpoint (metadata exchange).
        let identity = |p: &Pod| {
            let label = |k: &str| {
                p.instance
                    .labels
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| "unknown".into())
            };
            meshbox_proxy::WorkloadIdentity {
                workload: p.owner.clone(),
                namespace: p.instance.namespace.clone(),
                app: label("app"),
                version: label("version"),
            }
        };
        let peers: std::collections::HashMap<SocketAddr, meshbox_proxy::WorkloadIdentity> = self
            .pods
            .values()
            .flat_map(|p| {
                let id = identity(p);
                p.instance
                    .inbound
                    .values()
                    .map(move |a| (*a, id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut index = BTreeMap::new();
        for pod in self.pods.values() {
            let metrics = pod.proxy.metrics();
            metrics.set_identity(identity(pod));
            metrics.set_peers(peers.clone());
            index.insert(
                (pod.instance.namespace.clone(), pod.instance.name.clone()),
                metrics.clone(),
            );
        }
        if let Ok(mut shared) = self.metrics_index.write() {
            *shared = index;
        }
        let pods: Vec<&Pod> = self.pods.values().collect();
        let compile_and_swap = |pod: &Pod| {
            let mut tables = if pod.gateway.is_some() {
                state.gateway_tables(&pod.instance, &pod.gateway_ports)
            } else {
                state.sidecar_tables(&pod.instance)
            };
            // Header values naming a secret (`${file:...}`, `${env:...}`) are read here,
            // on every config change, never per request.
            for e in tables.resolve_header_secrets(&mut meshbox_routing::policy::read_secret) {
                tracing::error!(proxy = %pod.instance.name, "{e}");
            }
            pod.proxy.update(tables);
        };
        // Each proxy's tables are compiled from the same read-only state, so they are
        // compiled side by side on the machine's CPUs (a pod at a time, taken in turn),
        // as istiod pushes to proxies concurrently; one CPU or one pod: right here.
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(pods.len());
        if threads < 2 {
            pods.into_iter().for_each(compile_and_swap);
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
            while let Some(pod) = pods.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            {
                compile_and_swap(pod);
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(work);
            }
            work();
        });
    }

    fn next_suffix(&mut self) -> String {
        self.pod_counter += 1;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.settings.seed, self.pod_counter, std::process::id()).hash(&mut h);
        let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
        let mut v = h.finish();
        (0..5)
            .map(|_| {
                let c = alphabet[(v % alphabet.len() as u64) as usize] as char;
                v /= alphabet.len() as u64;
                c
            })
            .collect()
    }

    /// The access log target of one pod's proxy for the current options, and the
    /// task that writes its lines (to the pod's log file, and to meshbox's stdout or
    /// another file as `meshConfig.accessLogFile` says). `None` when access logs are off.
    fn access_log_for(&self, pod: &str, namespace: &str) -> Option<AccessLogWiring> {
        let file = self.options.access_log_file.as_str();
        if file.is_empty() {
            return None;
        }
        let (tx, rx) = mpsc::channel::<String>(8192);
        let echo = file == "/dev/stdout" || file == "/dev/stderr";
        let writer = tokio::spawn(write_logs(
            rx,
            log_file(&self.settings.dir, namespace, pod, "istio-proxy"),
            echo.then(|| format!("[{namespace}/{pod} istio-proxy] ")),
            (!echo).then(|| PathBuf::from(file)),
        ));
        let encoding = if self.options.access_log_encoding == "JSON" {
            Encoding::Json
        } else {
            Encoding::Text
        };
        Some(AccessLogWiring {
            sink: Arc::new(ChannelSink(tx)),
            encoding,
            writer,
        })
    }

    fn make_proxy(
        &self,
        pod: &str,
        namespace: &str,
    ) -> (Arc<Proxy>, Option<tokio::task::JoinHandle<()>>) {
        let wiring = self.access_log_for(pod, namespace);
        let (access_log, writer) = match wiring {
            Some(w) => (Some((w.sink, w.encoding)), Some(w.writer)),
            None => (None, None),
        };
        let settings = ProxySettings {
            name: pod.to_string(),
            resolver: self.settings.resolver.clone(),
            access_log,
            seed: self.settings.seed ^ self.pod_counter.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            workers: self.settings.workers.clone(),
        };
        // Its real tables come with the next `push_tables`, in the same reconcile.
        let empty = meshbox_routing::ProxyTables::empty(
            pod,
            namespace,
            meshbox_routing::ProxyKind::Sidecar,
            self.options.outbound_policy,
        );
        let proxy = Proxy::new(settings, empty);
        // DestinationRule `credentialName: NAME` reads `$MESHBOX_HOME/credentials/NAME/`.
        proxy.set_credentials_dir(Some(self.settings.dir.join("credentials")));
        (proxy, writer)
    }

    /// Points every proxy at access log targets for the current options, where the
    /// options changed since the proxy last got them.
    fn refresh_access_logs(&mut self) {
        let wanted = (
            self.options.access_log_file.clone(),
            self.options.access_log_encoding.clone(),
        );
        let keys: Vec<(String, String)> = self
            .pods
            .iter()
            .filter(|(_, p)| p.log_options != wanted)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let wiring = self.access_log_for(&key.1, &key.0);
            let Some(pod) = self.pods.get_mut(&key) else {
                continue;
            };
            match wiring {
                Some(w) => {
                    pod.proxy.set_access_log(Some((w.sink, w.encoding)));
                    // The old writer ends by itself once its last line is written.
                    pod.log_writer = Some(w.writer);
                }
                None => {
                    pod.proxy.set_access_log(None);
                    pod.log_writer = None;
                }
            }
            pod.log_options = wanted.clone();
        }
    }

    /// Serves `listener` with `proxy` on the first worker (see
    /// [`MeshSettings::workers`]). A listener bound here belongs to this runtime's
    /// reactor; it moves to the data plane's, where its connections will live.
    fn serve(
        &self,
        proxy: &Arc<Proxy>,
        listener: TcpListener,
        role: ListenerRole,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let proxy = proxy.clone();
        Ok(match self.settings.workers.listener_runtime() {
            None => tokio::spawn(proxy.serve(listener, role)),
            Some(handle) => {
                let listener = listener.into_std()?;
                handle.spawn(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => proxy.serve(listener, role).await,
                        Err(e) => tracing::error!("cannot serve a proxy listener: {e}"),
                    }
                })
            }
        })
    }

    async fn start_gateway(&mut self, gw: &GatewayComponent) -> std::io::Result<Pod> {
        let name = format!(
            "{}-{}-{}",
            gw.name,
            short_hash(&gw.name),
            self.next_suffix()
        );
        let (proxy, log_writer) = self.make_proxy(&name, &gw.namespace);
        let mut inbound = BTreeMap::new();
        let mut listeners = Vec::new();
        let mut gateway_ports = Vec::new();
        for (_, port, target) in gw.service_ports() {
            if *port == 15021 {
                continue; // the status port is Istio's health check; nothing routes there
            }
            let want = if gw.role == meshbox_config::GatewayRole::Ingress && *port == 80 {
                self.settings.ingress_port
            } else {
                0
            };
            let listener = proxy_listener(SocketAddr::from(([127, 0, 0, 1], want)))?;
            inbound.insert(*target, listener.local_addr()?);
            gateway_ports.push((*target, *port));
            listeners.push(self.serve(
                &proxy,
                listener,
                ListenerRole::Gateway {
                    service_port: *port,
                },
            )?);
        }
        let mut labels = gw.labels.clone();
        labels.insert("service.istio.io/canonical-name".into(), gw.name.clone());
        Ok(Pod {
            instance: WorkloadInstance {
                name,
                namespace: gw.namespace.clone(),
                labels,
                inbound,
                named_ports: BTreeMap::new(),
            },
            owner: gw.name.clone(),
            template_hash: String::new(),
            gateway: Some(gw.clone()),
            proxy,
            listeners,
            containers: Vec::new(),
            reserved_ports: Vec::new(),
            env: Vec::new(),
            gateway_ports,
            created: Instant::now(),
            log_writer,
            log_options: (
                self.options.access_log_file.clone(),
                self.options.access_log_encoding.clone(),
            ),
        })
    }

    async fn start_pod(&mut self, d: &Resource, hash: &str) -> std::io::Result<Pod> {
        let Spec::Deployment(spec) = &d.spec else {
            return Err(std::io::Error::other("not a deployment"));
        };
        let ns = d.namespace().to_string();
        let name = format!("{}-{}-{}", d.metadata.name, hash, self.next_suffix());
        let (proxy, log_writer) = self.make_proxy(&name, &ns);
        let outbound_listener = proxy_listener(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let outbound = outbound_listener.local_addr()?;
        let mut listeners =
            vec![self.serve(&proxy, outbound_listener, ListenerRole::SidecarOutbound)?];
        let mut inbound = BTreeMap::new();
        let mut named_ports = BTreeMap::new();
        let mut containers = Vec::new();
        let mut pod_env = Vec::new();
        // Held until the pod stops (see `ports`); released early only for commands that
        // are not built-in apps and so cannot share the port.
        let mut reserved_ports = Vec::new();
        for c in &spec.template.spec.containers {
            let mut env: Vec<(String, String)> = Vec::new();
            let mut first = true;
            for p in &c.ports {
                // The app listens on a free loopback port; the sidecar's inbound
                // listener stands for the container port, as a pod IP would.
                let reservation = PortReservation::new()?;
                let app_port = reservation.port();
                let app = reservation.addr();
                reserved_ports.push(reservation);
                let listener = proxy_listener(SocketAddr::from(([127, 0, 0, 1], 0)))?;
                inbound.insert(p.container_port, listener.local_addr()?);
                if let Some(n) = &p.name {
                    named_ports.insert(n.clone(), p.container_port);
                }
                listeners.push(self.serve(
                    &proxy,
                    listener,
                    ListenerRole::SidecarInbound {
                        port: p.container_port,
                        app,
                    },
                )?);
                if first {
                    env.push(("PORT".into(), app_port.to_string()));
                    first = false;
                }
                env.push((
                    format!("MESHBOX_PORT_{}", p.container_port),
                    app_port.to_string(),
                ));
            }
            let proxy_url = format!("http://{outbound}");
            env.extend([
                ("BIND_ADDRESS".to_string(), "127.0.0.1".to_string()),
                ("HTTP_PROXY".to_string(), proxy_url.clone()),
                ("http_proxy".to_string(), proxy_url.clone()),
                ("HTTPS_PROXY".to_string(), proxy_url.clone()),
                ("https_proxy".to_string(), proxy_url),
                (
                    "NO_PROXY".to_string(),
                    "localhost,127.0.0.1,::1".to_string(),
                ),
                (
                    "no_proxy".to_string(),
                    "localhost,127.0.0.1,::1".to_string(),
                ),
                ("POD_NAME".to_string(), name.clone()),
                ("POD_NAMESPACE".to_string(), ns.clone()),
                ("HOSTNAME".to_string(), name.clone()),
            ]);
            for e in &c.env {
                if let Some(v) = &e.value {
                    env.push((e.name.clone(), v.clone()));
                }
            }
            let command = self
                .settings
                .images
                .resolve(c.image.as_deref(), &c.command, &c.args)
                .map_err(std::io::Error::other)?;
            let (program, args, working_dir) = match command {
                LocalCommand::App(app) => {
                    env.push((REUSEPORT_ENV.to_string(), "1".to_string()));
                    (
                        self.settings.exe.clone(),
                        vec!["app".to_string(), app],
                        None,
                    )
                }
                LocalCommand::Command { argv, working_dir } => {
                    // A program of the user's binds its ports the plain way: free them
                    // (this container's are the last reserved) just before it starts.
                    let own = c.ports.len().min(reserved_ports.len());
                    reserved_ports.truncate(reserved_ports.len() - own);
                    let mut it = argv.into_iter();
                    let program = it.next().map(PathBuf::from).unwrap_or_default();
                    (program, it.collect(), working_dir)
                }
            };
            let spec = ProcessSpec {
                program,
                args,
                env: env.clone(),
                working_dir,
                log_file: log_file(&self.settings.dir, &ns, &name, &c.name),
            };
            containers.push((c.name.clone(), Supervised::start(spec)));
            if pod_env.is_empty() {
                pod_env = env;
            }
        }
        let mut labels = spec.template.metadata.labels.clone();
        labels.insert("pod-template-hash".into(), hash.to_string());
        Ok(Pod {
            instance: WorkloadInstance {
                name,
                namespace: ns,
                labels,
                inbound,
                named_ports,
            },
            owner: d.metadata.name.clone(),
            template_hash: hash.to_string(),
            gateway: None,
            proxy,
            listeners,
            containers,
            reserved_ports,
            env: pod_env,
            gateway_ports: Vec::new(),
            created: Instant::now(),
            log_writer,
            log_options: (
                self.options.access_log_file.clone(),
                self.options.access_log_encoding.clone(),
            ),
        })
    }

    /// Stops every pod and gateway.
    pub async fn shutdown(&mut self) {
        let pods: Vec<Pod> = std::mem::take(&mut self.pods).into_values().collect();
        let stops = pods.into_iter().map(stop_pod);
        for s in stops {
            s.await;
        }
    }

    /// `get pods` rows.
    pub fn pod_rows(&self, namespace: Option<&str>) -> Vec<[String; 6]> {
        self.pods
            .values()
            .filter(|p| namespace.is_none_or(|ns| p.instance.namespace == ns))
            .map(|p| {
                let running = p
                    .containers
                    .iter()
                    .filter(|(_, c)| c.current_state() == ContainerState::Running)
                    .count()
                    + 1;
                let total = p.containers.len() + 1;
                let status = p
                    .containers
                    .iter()
                    .map(|(_, c)| c.current_state())
                    .find(|s| *s != ContainerState::Running)
                    .map(|s| s.as_str())
                    .unwrap_or("Running");
                let restarts: u32 = p
                    .containers
                    .iter()
                    .map(|(_, c)| c.restarts.load(std::sync::atomic::Ordering::Relaxed))
                    .sum();
                let proxy = p
                    .instance
                    .inbound
                    .values()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                [
                    p.instance.namespace.clone(),
                    p.instance.name.clone(),
                    format!("{running}/{total}"),
                    status.to_string(),
                    restarts.to_string(),
                    format!("{} (age {}s)", proxy, p.created.elapsed().as_secs()),
                ]
            })
            .collect()
    }

    /// Finds a pod by its name or its Deployment's or gateway's name.
    pub fn locate(
        &self,
        name: &str,
        namespace: Option<&str>,
    ) -> Option<crate::control::PodLocation> {
        let in_ns = |p: &&Pod| namespace.is_none_or(|ns| p.instance.namespace == ns);
        let pod = self
            .pods
            .values()
            .filter(in_ns)
            .find(|p| p.instance.name == name)
            .or_else(|| self.pods.values().filter(in_ns).find(|p| p.owner == name))
            .or_else(|| {
                self.pods
                    .values()
                    .filter(in_ns)
                    .find(|p| p.instance.name.starts_with(name))
            })?;
        let mut logs = vec![(
            "istio-proxy".to_string(),
            log_file(
                &self.settings.dir,
                &pod.instance.namespace,
                &pod.instance.name,
                "istio-proxy",
            )
            .display()
            .to_string(),
        )];
        for (c, _) in &pod.containers {
            logs.push((
                c.clone(),
                log_file(
                    &self.settings.dir,
                    &pod.instance.namespace,
                    &pod.instance.name,
                    c,
                )
                .display()
                .to_string(),
            ));
        }
        Some(crate::control::PodLocation {
            name: pod.instance.name.clone(),
            namespace: pod.instance.namespace.clone(),
            env: pod.env.clone(),
            logs,
        })
    }

    /// The pod named `name`, or the first pod of the Deployment or gateway so named (or
    /// whose pod name starts with it): in `namespace` first, then in any namespace.
    fn find_pod(&self, name: &str, namespace: Option<&str>) -> Option<&Pod> {
        let find = |ns: Option<&str>| {
            let in_ns = |p: &&Pod| ns.is_none_or(|ns| p.instance.namespace == ns);
            let pods = || self.pods.values().filter(in_ns);
            pods()
                .find(|p| p.instance.name == name)
                .or_else(|| pods().find(|p| p.owner == name))
                .or_else(|| pods().find(|p| p.instance.name.starts_with(name)))
        };
        find(namespace).or_else(|| namespace.and_then(|_| find(None)))
    }

    /// Where a pod's proxy listens and what each listener carries.
    fn pod_listeners(pod: &Pod) -> Vec<meshbox_routing::dump::ProxyListener> {
        use meshbox_routing::dump::{ListenerRole as Role, ProxyListener};
        let mut out = Vec::new();
        if pod.gateway.is_some() {
            for (container_port, service_port) in &pod.gateway_ports {
                if let Some(addr) = pod.instance.inbound.get(container_port) {
                    out.push(ProxyListener {
                        address: addr.to_string(),
                        role: Role::Gateway {
                            container_port: *container_port,
                            service_port: *service_port,
                        },
                    });
                }
            }
            return out;
        }
        let env = |k: &str| pod.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let Some(proxy) = env("HTTP_PROXY") {
            out.push(ProxyListener {
                address: proxy.trim_start_matches("http://").to_string(),
                role: Role::SidecarOutbound,
            });
        }
        for (port, addr) in &pod.instance.inbound {
            out.push(ProxyListener {
                address: addr.to_string(),
                role: Role::SidecarInbound {
                    port: *port,
                    app: env(&format!("MESHBOX_PORT_{port}")).map(|p| format!("127.0.0.1:{p}")),
                },
            });
        }
        out
    }

    /// The current tables and listeners of one proxy, for `proxy-config`.
    pub fn proxy_config(
        &self,
        name: &str,
        namespace: Option<&str>,
    ) -> Option<meshbox_routing::dump::ProxyConfig> {
        let pod = self.find_pod(name, namespace)?;
        Some(meshbox_routing::dump::proxy_config(
            &pod.proxy.tables(),
            &Self::pod_listeners(pod),
        ))
    }

    /// How the proxy of `from` routes `request` with its current tables, for `trace`.
    pub fn trace(
        &self,
        from: &str,
        namespace: Option<&str>,
        request: &meshbox_routing::trace::TraceRequest,
    ) -> Option<meshbox_routing::trace::Trace> {
        let pod = self.find_pod(from, namespace)?;
        let workloads: Vec<WorkloadInstance> =
            self.pods.values().map(|p| p.instance.clone()).collect();
        let state = MeshState::new(&self.store, &self.options, &workloads);
        let ctx = meshbox_routing::trace::TraceContext {
            state: &state,
            proxy: &pod.instance,
        };
        Some(meshbox_routing::trace::trace(
            &pod.proxy.tables(),
            request,
            Some(&ctx),
        ))
    }
}

async fn stop_pod(pod: Pod) {
    for l in &pod.listeners {
        l.abort();
    }
    for (_, c) in pod.containers {
        c.stop().await;
    }
    // Only now that its processes are gone may another pod get the app ports.
    drop(pod.reserved_ports);
    drop(pod.proxy);
    if let Some(w) = pod.log_writer {
        w.abort();
    }
}

/// Runs CPU-heavy control-plane work (parsing manifests, compiling every proxy's
/// tables) without holding up the proxies that share the runtime: on a multi-thread
/// runtime the worker hands its other tasks to another thread for the duration, as
/// istiod computes config apart from the Envoys it serves.
fn off_the_data_plane<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Default profile ⊕ IstioOperator objects (in creation order) ⊕ `--set` flags.
fn compute_options(store: &Store, set_flags: &[String]) -> Result<MeshOptions, String> {
    let mut layers = Vec::new();
    for r in store.of_kind(Kind::IstioOperator) {
        if let Spec::IstioOperator(v) = &r.spec {
            layers.push(v.clone());
        }
    }
    layers.push(parse_set_flags(set_flags)?);
    MeshOptions::from_layers(&layers)
}

fn short_hash(s: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    format!("{:010x}", h.finish() & 0xFF_FFFF_FFFF)
}

/// Kubernetes' pod-template-hash: a stable digest of the pod template.
fn template_hash(template: &meshbox_config::kube::PodTemplateSpec) -> String {
    short_hash(&serde_json::to_string(template).unwrap_or_default())
}

/// Hands access log lines to the pod's log writer without blocking the request path;
/// lines are dropped if the writer falls 8192 lines behind.
struct ChannelSink(mpsc::Sender<String>);

impl AccessLogSink for ChannelSink {
    fn write_line(&self, line: &str) {
        let _ = self.0.try_send(line.to_string());
    }
}

async fn write_logs(
    mut rx: mpsc::Receiver<String>,
    file: PathBuf,
    echo_prefix: Option<String>,
    extra: Option<PathBuf>,
) {
    async fn open(p: &Path) -> Option<tokio::fs::File> {
        if let Some(parent) = p.parent() {
            let _ = tokio::fs::create_dir_all(parent).await;
        }
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .await
            .ok()
    }
    let mut f = open(&file).await;
    let mut extra_f = match &extra {
        Some(p) => open(p).await,
        None => None,
    };
    while let Some(line) = rx.recv().await {
        let text = format!("{line}\n");
        if let Some(f) = f.as_mut() {
            let _ = f.write_all(text.as_bytes()).await;
        }
        if let Some(f) = extra_f.as_mut() {
            let _ = f.write_all(text.as_bytes()).await;
        }
        if let Some(prefix) = &echo_prefix {
            let mut out = tokio::io::stdout();
            let _ = out.write_all(format!("{prefix}{text}").as_bytes()).await;
            let _ = out.flush().await;
        }
    }
}
