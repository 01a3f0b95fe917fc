//! Pod names, namespaces and container names from the node's container runtime, over
//! Kubernetes' Container Runtime Interface (CRI) on the runtime's unix socket.
//!
//! A cgroup path gives a container's id and, in Kubernetes, its pod's uid: never the names
//! people know their pods by. Those the runtime keeps, as the metadata kubelet gave when it
//! created the pod's sandbox and its containers. For a container id met in a cgroup path,
//! `ListContainers` (filtered by id) gives the container's name and its sandbox, and
//! `ListPodSandbox` (filtered by that id) the pod's name, namespace and uid. A process that is
//! the sandbox itself (the pause container) is found by the second call alone.
//!
//! The calls run on a thread of their own with its own tokio runtime: the pipeline asks from
//! its record path (inside the session's runtime), once per container (answers, and failures,
//! are cached, the cache bounded), and waits at most [`INLINE_WAIT`] for the answer; a later
//! answer names the container's processes from then on ([`Cri::take_named`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStateValue, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxFilter, VersionRequest,
};

use probectl_pipeline::capture::summary::CriCounts;
use tonic::transport::{Channel, Endpoint};

/// Where the CRI runtimes listen by default, tried in this order when no socket is given:
/// containerd, CRI-O, k3s's containerd, cri-dockerd.
pub const DEFAULT_SOCKETS: [&str; 4] = [
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
    "/run/cri-dockerd.sock",
];

/// How long one container's lookup may take on the CRI thread before it counts as failed.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the pipeline waits for an answer before it goes on (two calls on a local socket
/// take a millisecond or two): a later answer names the container's processes from then on.
pub const INLINE_WAIT: Duration = Duration::from_millis(20);

/// Lookups sent and not answered at most (the rest wait for a later meeting, counted).
const PENDING_MAX: usize = 256;

/// How long a runtime whose lookup failed is left alone.
const FAILING_PAUSE: Duration = Duration::from_secs(30);

/// How long connecting and asking the runtime's version may take at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Containers whose answer is kept at most; past it the cache starts again (counted).
pub const CONTAINERS_MAX: usize = probectl_common::capacity::CONTAINERS;

/// What the runtime says about a container's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The container's name within its pod (`None` for the sandbox itself).
    pub container: Option<String>,
}

impl Pod {
    /// The names the outputs show.
    pub fn names(&self) -> probectl_pipeline::capture::identity::PodNames {
        probectl_pipeline::capture::identity::PodNames {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            container: self.container.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot start the CRI client's thread")]
    Thread(#[source] std::io::Error),
    #[error("cannot start the CRI client's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot connect to the CRI socket {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{} does not answer CRI's Version call (is the runtime's CRI service enabled?)", socket.display())]
    Version {
        socket: PathBuf,
        #[source]
        source: tonic::Status,
    },
    #[error("{} did not answer within {:?}", socket.display(), CONNECT_TIMEOUT)]
    Timeout { socket: PathBuf },
}

type Reply = Result<Option<Pod>, String>;

/// What the CRI thread is asked.
enum Request {
    /// The pod of a container (answered on the answers' channel).
    Pod(String),
    /// The names of the running containers (for `--container NAME`).
    Names(mpsc::Sender<Result<Vec<(String, String)>, String>>),
}

/// A connection to a CRI runtime, asked from synchronous code.
pub struct Cri {
    requests: mpsc::Sender<Request>,
    answers: HashMap<String, Option<Pod>>,
    /// Shared with the session, which puts them in the summary when the run ends.
    counts: Arc<Mutex<CriCounts>>,
    /// Containers asked about, not answered yet.
    pending: HashSet<String>,
    /// The answers, from the CRI thread.
    answers_in: mpsc::Receiver<(String, Reply)>,
    /// Containers named since [`Cri::take_named`] was last called.
    named: Vec<(String, Pod)>,
    /// Set when a lookup failed: no lookups until then.
    failing_until: Option<Instant>,
}

impl Cri {
    /// Connects to `socket`, or (none given) to the first default socket that exists and
    /// answers. `Ok(None)`: no socket given and none of the defaults exists. A given socket
    /// that fails is an error; a default one that exists but fails is returned as the error
    /// too, for the caller to say (and go on without pod names).
    pub fn open(socket: Option<&Path>) -> Result<Option<Cri>, CriError> {
        if let Some(socket) = socket {
            return Cri::connect(socket).map(Some);
        }
        let mut first_error = None;
        for candidate in DEFAULT_SOCKETS.iter().map(Path::new) {
            if !candidate.exists() {
                continue;
            }
            match Cri::connect(candidate) {
                Ok(cri) => return Ok(Some(cri)),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(None), Err)
    }

    fn connect(socket: &Path) -> Result<Cri, CriError> {
        let (requests, incoming) = mpsc::channel::<Request>();
        let (answers_out, answers_in) = mpsc::channel::<(String, Reply)>();
        let (ready, started) = mpsc::channel::<Result<String, CriError>>();
        let path = socket.to_path_buf();
        std::thread::Builder::new()
            .name("probectl-cri".into())
            .spawn(move || serve(path, incoming, answers_out, ready))
            .map_err(CriError::Thread)?;
        let runtime = started
            .recv_timeout(CONNECT_TIMEOUT + Duration::from_secs(1))
            .map_err(|_| CriError::Timeout {
                socket: socket.to_path_buf(),
            })??;
        Ok(Cri {
            requests,
            answers: HashMap::new(),
            pending: HashSet::new(),
            answers_in,
            named: Vec::new(),
            failing_until: None,
            counts: Arc::new(Mutex::new(CriCounts {
                socket: socket.display().to_string(),
                runtime,
                ..CriCounts::default()
            })),
        })
    }

    /// What the lookups did (read when the run ends).
    pub fn counts(&self) -> Arc<Mutex<CriCounts>> {
        self.counts.clone()
    }

    /// The runtime's name and version, and its socket.
    pub fn describe(&self) -> String {
        self.with_counts(|c| format!("{} at {}", c.runtime, c.socket))
    }

    fn with_counts<T>(&self, f: impl FnOnce(&mut CriCounts) -> T) -> T {
        // A panic elsewhere while holding the lock leaves counts that are still counts.
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut counts)
    }

    /// The running containers' names → ids, each container under three names: its own
    /// (`client`), with its pod's (`checkout-7d9f/client`), and with the namespace too
    /// (`shop/checkout-7d9f/client`, as the outputs name it). Empty when the runtime fails.
    pub fn container_names(&self) -> Result<Vec<(String, String)>, String> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .send(Request::Names(reply))
            .map_err(|_| "the CRI thread has ended".to_string())?;
        answer
            .recv_timeout(CONNECT_TIMEOUT + Duration::from_secs(1))
            .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))?
    }

    /// The pod of container `id` (64 hex digits), asked once per container. The answer is
    /// waited for at most [`INLINE_WAIT`] (a runtime answers in a millisecond or two); one
    /// that comes later is kept, and handed out by [`Cri::take_named`] for the processes
    /// already met.
    pub fn pod_of(&mut self, id: &str) -> Option<Pod> {
        self.receive(Duration::ZERO);
        if let Some(answer) = self.answers.get(id) {
            return answer.clone();
        }
        if self.pending.contains(id) {
            return None;
        }
        // A runtime that just failed is not asked for a while: its lookups would pile up.
        // The containers met meanwhile are asked when met again after it.
        if self
            .failing_until
            .is_some_and(|until| Instant::now() < until)
            || self.pending.len() >= PENDING_MAX
        {
            self.with_counts(|c| c.not_asked_runtime_failing += 1);
            return None;
        }
        if self.requests.send(Request::Pod(id.to_string())).is_err() {
            return None;
        }
        self.pending.insert(id.to_string());
        self.with_counts(|c| c.containers_asked += 1);
        let deadline = Instant::now() + INLINE_WAIT;
        while self.pending.contains(id) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.receive(left) {
                break;
            }
        }
        self.answers.get(id).cloned().flatten()
    }

    /// The containers the runtime named since the last call, for the processes met before
    /// their answer came.
    pub fn take_named(&mut self) -> Vec<(String, Pod)> {
        self.receive(Duration::ZERO);
        std::mem::take(&mut self.named)
    }

    /// Whether lookups are still unanswered.
    pub fn awaiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the answers that came (waiting at most `wait` for the first); false when none
    /// came.
    fn receive(&mut self, wait: Duration) -> bool {
        let mut any = false;
        let mut next = if wait.is_zero() {
            self.answers_in.try_recv().ok()
        } else {
            self.answers_in.recv_timeout(wait).ok()
        };
        while let Some((id, answer)) = next {
            any = true;
            self.pending.remove(&id);
            if self.answers.len() >= CONTAINERS_MAX {
                self.answers.clear();
                self.with_counts(|c| c.cache_cleared += 1);
            }
            let pod = match answer {
                Ok(Some(pod)) => {
                    self.with_counts(|c| c.pods_named += 1);
                    self.named.push((id.clone(), pod.clone()));
                    self.failing_until = None;
                    Some(pod)
                }
                Ok(None) => {
                    self.with_counts(|c| c.unknown += 1);
                    self.failing_until = None;
                    None
                }
                Err(_) => {
                    self.with_counts(|c| c.failed += 1);
                    self.failing_until = Some(Instant::now() + FAILING_PAUSE);
                    None
                }
            };
            self.answers.insert(id, pod);
            next = self.answers_in.try_recv().ok();
        }
        any
    }
}

/// The CRI thread: connects, says the runtime's name, then answers lookups until the [`Cri`]
/// is dropped.
fn serve(
    socket: PathBuf,
    incoming: mpsc::Receiver<Request>,
    answers: mpsc::Sender<(String, Reply)>,
    ready: mpsc::Sender<Result<String, CriError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(CriError::Runtime(error)));
            return;
        }
    };
    let client = runtime.block_on(async {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&socket)).await;
        let mut client = match connected {
            Ok(client) => client?,
            Err(_) => return Err(CriError::Timeout { socket }),
        };
        let version = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client.version(VersionRequest {
                version: String::new(),
            }),
        )
        .await
        .map_err(|_| CriError::Timeout {
            socket: socket.clone(),
        })?
        .map_err(|source| CriError::Version {
            socket: socket.clone(),
            source,
        })?
        .into_inner();
        Ok((
            client,
            format!("{} {}", version.runtime_name, version.runtime_version),
        ))
    });
    let mut client = match client {
        Ok((client, name)) => {
            if ready.send(Ok(name)).is_err() {
                return;
            }
            client
        }
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    // An asker may have given up waiting: its answer is lost, and it counted a failure.
    while let Ok(request) = incoming.recv() {
        match request {
            Request::Pod(id) => {
                let answer = runtime.block_on(async {
                    tokio::time::timeout(LOOKUP_TIMEOUT, lookup(&mut client, &id))
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()))
                });
                if answers.send((id, answer)).is_err() {
                    return;
                }
            }
            Request::Names(reply) => {
                let answer = runtime.block_on(async {
                    tokio::time::timeout(CONNECT_TIMEOUT, names(&mut client))
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()))
                });
                let _ = reply.send(answer);
            }
        }
    }
}

async fn connect(socket: &Path) -> Result<RuntimeServiceClient<Channel>, CriError> {
    let path = socket.to_path_buf();
    // The URI is not used: every connection goes to the socket.
    let channel = Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .map_err(|source| CriError::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
    Ok(RuntimeServiceClient::new(channel))
}

/// The container's pod: its container entry names its sandbox; a sandbox is its own.
async fn lookup(client: &mut RuntimeServiceClient<Channel>, id: &str) -> Reply {
    let containers = client
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                id: id.to_string(),
                ..ContainerFilter::default()
            }),
        })
        .await
        .map_err(|status| status.message().to_string())?
        .into_inner()
        .containers;
    let (sandbox, container) = match containers.into_iter().find(|c| c.id == id) {
        Some(container) => (container.pod_sandbox_id, container.metadata.map(|m| m.name)),
        None => (id.to_string(), None),
    };
    let sandboxes = client
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                id: sandbox.clone(),
                ..PodSandboxFilter::default()
            }),
        })
        .await
        .map_err(|status| status.message().to_string())?
        .into_inner()
        .items;
    Ok(sandboxes
        .into_iter()
        .find(|s| s.id == sandbox)
        .and_then(|s| s.metadata)
        .map(|metadata| Pod {
            name: metadata.name,
            namespace: metadata.namespace,
            uid: metadata.uid,
            container,
        }))
}

/// The running containers' names (see [`Cri::container_names`]).
async fn names(
    client: &mut RuntimeServiceClient<Channel>,
) -> Result<Vec<(String, String)>, String> {
    let containers = client
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning as i32,
                }),
                ..ContainerFilter::default()
            }),
        })
        .await
        .map_err(|status| status.message().to_string())?
        .into_inner()
        .containers;
    let sandboxes = client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .map_err(|status| status.message().to_string())?
        .into_inner()
        .items;
    let mut names = Vec::new();
    for container in containers {
        let Some(name) = container.metadata.map(|m| m.name) else {
            continue;
        };
        let pod = sandboxes
            .iter()
            .find(|s| s.id == container.pod_sandbox_id)
            .and_then(|s| s.metadata.as_ref());
        if let Some(pod) = pod {
            names.push((format!("{}/{name}", pod.name), container.id.clone()));
            names.push((
                format!("{}/{}/{name}", pod.namespace, pod.name),
                container.id.clone(),
            ));
        }
        names.push((name, container.id));
    }
    Ok(names)
}
