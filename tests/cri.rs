//! Pod names from a real container runtime's CRI socket: a private containerd (Debian's, its
//! own root, state and socket, runc) gets a pod and a container through CRI, as kubelet makes
//! them, with a Kubernetes cgroup parent. The container runs curl against a real HTTPS server
//! while probectl traces the whole machine with `--cri-socket`.
//!
//! The oracles are independent of probectl: the names and uid the test gave the runtime, the
//! container id the runtime returned, the path curl asked for (unique to the run), and the file
//! curl wrote (the content the server served).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use tonic::transport::Channel;

/// The image of both the pod's sandbox and its container: a static busybox that sleeps, with
/// mount points for the host's /usr (the container's curl and its libraries).
const IMAGE: &str = "localhost/probectl-cri-test:1";

/// A private containerd, stopped (its pods first) and its directories removed when dropped.
struct Containerd {
    dir: PathBuf,
    socket: PathBuf,
    daemon: Option<Guard>,
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    sandboxes: Vec<String>,
}

fn run(command: &mut Command) -> String {
    let output = command.stdin(Stdio::null()).output().expect("spawn");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Containerd {
    fn start() -> Containerd {
        let dir = scratch_file("containerd");
        let socket = dir.join("containerd.sock");
        for sub in [
            "root",
            "state",
            "cni",
            "image/usr",
            "image/etc",
            "image/tmp",
            "image/proc",
            "image/dev",
            "image/sys",
        ] {
            std::fs::create_dir_all(dir.join(sub)).expect("containerd dirs");
        }
        let config = format!(
            r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
[grpc]
  address = "{dir}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  # This machine's root lacks CAP_SYS_RESOURCE: no oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{dir}/cni"
    conf_dir = "{dir}/cni"
"#,
            dir = dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).expect("config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("containerd (Debian's containerd package)");
        let daemon = Guard(daemon);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "containerd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The image, made without a registry: a directory imported by podman, saved as an
        // archive, imported by containerd into the namespace its CRI service uses.
        let image = dir.join("image");
        std::fs::copy("/bin/busybox", image.join("busybox")).expect("busybox-static");
        for (link, target) in [
            ("bin", "usr/bin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(target, image.join(link)).expect("link");
        }
        std::fs::create_dir_all(image.join("out")).expect("out");
        let tar = dir.join("image.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&image)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        run(Command::new("podman")
            .args([
                "import",
                "--change",
                r#"CMD ["/busybox","sleep","2147483647"]"#,
            ])
            .arg(&tar)
            .arg(IMAGE));
        let archive = dir.join("image-archive.tar");
        run(Command::new("podman")
            .args(["save", "--format", "docker-archive", "-o"])
            .arg(&archive)
            .arg(IMAGE));
        run(Command::new("ctr")
            .arg("-a")
            .arg(&socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let path = socket.clone();
        let channel = runtime
            .block_on(
                tonic::transport::Endpoint::from_static("http://[::1]:50051")
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    })),
            )
            .expect("connect to containerd's CRI");
        Containerd {
            dir,
            socket,
            daemon: Some(daemon),
            runtime,
            client: RuntimeServiceClient::new(channel),
            sandboxes: Vec::new(),
        }
    }

    /// Runs a pod (host network, cgroup parent as kubelet's cgroupfs driver names it) and
    /// returns its sandbox id and its config.
    fn run_pod(&mut self, name: &str, namespace: &str, uid: &str) -> (String, PodSandboxConfig) {
        let host_network = Some(NamespaceOption {
            network: NamespaceMode::Node as i32,
            ..NamespaceOption::default()
        });
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            log_directory: self.dir.join("logs").display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: host_network,
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        };
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let id = self
            .runtime
            .block_on(self.client.run_pod_sandbox(request))
            .unwrap_or_else(|status| panic!("RunPodSandbox: {status}\n{}", self.log()))
            .into_inner()
            .pod_sandbox_id;
        self.sandboxes.push(id.clone());
        (id, config)
    }

    /// Creates and starts a container of the pod running `command`, with the host's /usr and
    /// `out` (at /out) mounted; returns its id.
    fn start_container(
        &mut self,
        (sandbox, sandbox_config): &(String, PodSandboxConfig),
        name: &str,
        out: &Path,
        command: &[&str],
    ) -> String {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..ImageSpec::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            mounts: vec![
                Mount {
                    container_path: "/usr".into(),
                    host_path: "/usr".into(),
                    readonly: true,
                    ..Mount::default()
                },
                Mount {
                    container_path: "/out".into(),
                    host_path: out.display().to_string(),
                    ..Mount::default()
                },
            ],
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..NamespaceOption::default()
                    }),
                    ..LinuxContainerSecurityContext::default()
                }),
                ..LinuxContainerConfig::default()
            }),
            ..ContainerConfig::default()
        };
        let id = self
            .runtime
            .block_on(self.client.create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            }))
            .unwrap_or_else(|status| panic!("CreateContainer: {status}\n{}", self.log()))
            .into_inner()
            .container_id;
        self.runtime
            .block_on(self.client.start_container(StartContainerRequest {
                container_id: id.clone(),
            }))
            .unwrap_or_else(|status| panic!("StartContainer: {status}\n{}", self.log()));
        id
    }

    /// Waits (at most 30 s) for a container to exit; returns its exit code.
    fn wait_exit(&mut self, id: &str) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self
                .runtime
                .block_on(self.client.container_status(ContainerStatusRequest {
                    container_id: id.into(),
                    verbose: false,
                }))
                .expect("ContainerStatus")
                .into_inner()
                .status
                .expect("status");
            // CONTAINER_EXITED
            if status.state == 2 {
                return status.exit_code;
            }
            assert!(Instant::now() < deadline, "container {id} did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.sandboxes) {
            let _ = self
                .runtime
                .block_on(self.client.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }));
            let _ = self.runtime.block_on(
                self.client
                    .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }),
            );
        }
        drop(self.daemon.take());
        // The runc shims of a containerd stopped early exit by themselves when their
        // containers are gone; the directories are removed when nothing is mounted in them.
        let root = self.dir.join("root");
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for mount in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if mount.starts_with(&*root.to_string_lossy())
                || mount.starts_with(&*self.dir.join("state").to_string_lossy())
            {
                let _ = Command::new("umount").arg("-l").arg(mount).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn pods_are_named_by_the_runtimes_cri_socket() {
    let _lock = exclusive();
    let mut containerd = Containerd::start();
    let site = scratch_file("cri-site");
    std::fs::create_dir_all(&site).expect("site");
    let nonce = format!("{}-{:?}", std::process::id(), Instant::now());
    let nonce: String = nonce.chars().filter(char::is_ascii_alphanumeric).collect();
    let file = format!("pod-{nonce}.txt");
    let content = format!("served to the pod {nonce}\n");
    std::fs::write(site.join(&file), &content).expect("site file");
    let (_server, port) = www_server(&site, "127.0.0.1");
    let out = scratch_file("cri-out");
    std::fs::create_dir_all(&out).expect("out");

    let receiver = common::otlp::Receiver::start("http");
    let export = receiver.url();
    let trace = Trace::start(
        &[
            "openssl",
            "--decode",
            "http",
            "--cri-socket",
            containerd.socket.to_str().expect("path"),
            "--export",
            &export,
        ],
        &[],
    );
    let uid = "5f1c7a2e-0b8d-4c6e-9a31-27d4e8b9c0f1";
    let pod = containerd.run_pod("checkout-7d9f", "shop", uid);
    let url = format!("https://127.0.0.1:{port}/{file}");
    let container = containerd.start_container(
        &pod,
        "client",
        &out,
        &["/usr/bin/curl", "-sk", "--http1.1", "-o", "/out/got", &url],
    );
    assert_eq!(containerd.wait_exit(&container), 0, "curl in the pod");
    assert_eq!(
        std::fs::read_to_string(out.join("got")).expect("what curl wrote"),
        content
    );
    std::thread::sleep(Duration::from_millis(500));
    let run = trace.stop_lines();
    assert!(run.status.success(), "{}", run.stderr);

    // The request and the response name the container, its pod and its names.
    let path = format!("/{file}");
    let heads: Vec<_> = run
        .lines
        .iter()
        .filter(|line| line["type"] == "http_head")
        .filter(|line| line["container"]["id"].as_str() == Some(container.as_str()))
        .collect();
    assert!(
        heads
            .iter()
            .any(|line| line["part"] == "request" && line["path"] == path.as_str()),
        "no request for {path} from container {container}:\n{}",
        run.stderr
    );
    assert!(heads.iter().any(|line| line["part"] == "response"));
    for line in &heads {
        let named = &line["container"];
        assert_eq!(named["pod_uid"], uid, "{line}");
        assert_eq!(named["pod"]["name"], "checkout-7d9f", "{line}");
        assert_eq!(named["pod"]["namespace"], "shop", "{line}");
        assert_eq!(named["pod"]["container"], "client", "{line}");
    }
    // The report: the container with its pod, and the lookups counted.
    let listed = run.report["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["id"].as_str() == Some(container.as_str()))
        .unwrap_or_else(|| panic!("{container} not in the report: {}", run.report));
    assert_eq!(listed["pod"]["name"], "checkout-7d9f");
    let cri = &run.report["cri"];
    assert_eq!(cri["socket"], containerd.socket.to_str().expect("path"));
    assert!(
        cri["runtime"]
            .as_str()
            .is_some_and(|r| r.starts_with("containerd")),
        "{cri}"
    );
    assert!(cri["pods_named"].as_u64() >= Some(1), "{cri}");
    assert_eq!(cri["failed"], 0, "{cri}");
    assert!(
        run.stderr.contains("pod names from containerd"),
        "{}",
        run.stderr
    );
    let summary = run
        .stderr
        .lines()
        .find(|line| line.contains(": pod names from containerd") && line.contains("asked"))
        .unwrap_or_else(|| panic!("no summary line of the lookups:\n{}", run.stderr));
    assert!(summary.contains(", 0 failed, 0 not asked"), "{summary}");
    // The exported span's resource names the pod as OpenTelemetry's semantic conventions do.
    let spans = receiver.spans();
    let span = spans
        .iter()
        .find(|span| span["attributes"]["url.path"] == path.as_str())
        .unwrap_or_else(|| panic!("no span for {path}: {spans:?}"));
    let resource = &span["resource"];
    assert_eq!(resource["container.id"], container.as_str(), "{span}");
    assert_eq!(resource["k8s.pod.name"], "checkout-7d9f", "{span}");
    assert_eq!(resource["k8s.namespace.name"], "shop", "{span}");
    assert_eq!(resource["k8s.container.name"], "client", "{span}");
    assert_eq!(resource["k8s.pod.uid"], uid, "{span}");
}

#[test]
fn a_cri_socket_that_does_not_answer_is_refused_before_tracing() {
    let socket = scratch_file("no-cri.sock");
    let output = Command::new(PROBECTL)
        .args(["run", "openssl", "--cri-socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .output()
        .expect("probectl");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "--cri-socket: cannot connect to the CRI socket {}",
            socket.display()
        )),
        "{stderr}"
    );
}

#[test]
fn container_selects_a_pods_container_by_its_kubernetes_names() {
    let _lock = exclusive();
    let mut containerd = Containerd::start();
    let site = scratch_file("cri-select-site");
    std::fs::create_dir_all(&site).expect("site");
    let (_server, port) = www_server(&site, "127.0.0.1");
    // Two pods of one namespace, each with a container named "client" that loops on curl, each
    // asking for a path of its own.
    let mut loops = Vec::new();
    for (pod, uid) in [
        ("checkout-7d9f", "0a6f3c1e-8d2b-4f7a-9c5e-1b3d5f7a9c0e"),
        ("cart-55b", "7e2d4b6a-1c3f-4e5a-8b7c-9d0e1f2a3b4c"),
    ] {
        let file = format!("{pod}-{}.txt", std::process::id());
        std::fs::write(site.join(&file), format!("{pod}\n")).expect("site file");
        let out = scratch_file("cri-select-out");
        std::fs::create_dir_all(&out).expect("out");
        let script = format!(
            "while :; do curl -sk --http1.1 -o /out/got https://127.0.0.1:{port}/{file}; sleep 0.2; done"
        );
        let sandbox = containerd.run_pod(pod, "shop", uid);
        let id = containerd.start_container(&sandbox, "client", &out, &["/bin/sh", "-c", &script]);
        wait_for_file(&out.join("got"));
        loops.push((pod, format!("/{file}"), id));
    }
    let socket = containerd.socket.to_str().expect("path").to_string();

    // "client" names both containers: refused, with both ids.
    let output = Command::new(PROBECTL)
        .args([
            "run",
            "openssl",
            "--cri-socket",
            &socket,
            "--container",
            "client",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("probectl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--container client matches several containers")
            && loops.iter().all(|(_, _, id)| stderr.contains(id.as_str())),
        "{stderr}"
    );

    // NAMESPACE/POD/CONTAINER names one.
    let trace = Trace::start(
        &[
            "openssl",
            "--decode",
            "http",
            "--cri-socket",
            &socket,
            "--container",
            "shop/checkout-7d9f/client",
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let run = trace.stop_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let requests: Vec<_> = run
        .lines
        .iter()
        .filter(|line| line["type"] == "http_head" && line["part"] == "request")
        .collect();
    let (_, selected_path, selected_id) = &loops[0];
    let (_, other_path, _) = &loops[1];
    assert!(
        requests
            .iter()
            .any(|line| line["path"] == selected_path.as_str()),
        "no request of the selected container:\n{}",
        run.stderr
    );
    for line in &requests {
        assert_eq!(line["container"]["id"], selected_id.as_str(), "{line}");
        assert_eq!(line["container"]["pod"]["name"], "checkout-7d9f", "{line}");
        assert_ne!(line["path"], other_path.as_str(), "{line}");
    }
    assert_eq!(run.report["selection"]["in_kernel"], true, "{}", run.report);
    assert!(
        run.stderr
            .contains(&format!("container {}", &selected_id[..12])),
        "{}",
        run.stderr
    );
}

/// Runs curl once in a Podman container (a runtime the CRI socket does not know), with the
/// image directory of `containerd` as its root file system; returns the container's id.
fn podman_curl(containerd: &Containerd, url: &str) -> String {
    let output = Command::new("podman")
        .args(["--runtime", "/usr/sbin/runc", "run", "-d"])
        // CAP_SYS_RESOURCE is absent here: podman's default limits cannot be set.
        .args([
            "--ulimit",
            "nofile=1000:1000",
            "--ulimit",
            "nproc=1000:1000",
        ])
        .args(["--network", "host", "-v", "/usr:/usr:ro", "--rootfs"])
        .arg(containerd.dir.join("image"))
        .args(["/usr/bin/curl", "-sk", "--http1.1", "-o", "/dev/null", url])
        .stdin(Stdio::null())
        .output()
        .expect("podman");
    assert!(output.status.success(), "podman run: {output:?}");
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let wait = Command::new("podman")
        .args(["wait", &id])
        .output()
        .expect("podman wait");
    assert_eq!(
        String::from_utf8_lossy(&wait.stdout).trim(),
        "0",
        "curl in {id}"
    );
    let _ = Command::new("podman").args(["rm", "-f", &id]).output();
    id
}

#[test]
fn a_runtime_that_hangs_costs_one_timeout_and_is_counted() {
    let _lock = exclusive();
    let containerd = Containerd::start();
    let site = scratch_file("cri-hang-site");
    std::fs::create_dir_all(&site).expect("site");
    for name in ["first.txt", "second.txt"] {
        std::fs::write(site.join(name), name).expect("site file");
    }
    let (_server, port) = www_server(&site, "127.0.0.1");
    let trace = Trace::start(
        &[
            "openssl",
            "--decode",
            "http",
            "--cri-socket",
            containerd.socket.to_str().expect("path"),
        ],
        &[],
    );
    // The runtime stops answering (stopped, its socket still accepting).
    let daemon = containerd.daemon.as_ref().expect("containerd").0.id() as i32;
    // SAFETY: kill(2) on our own child's pid, which we have not reaped.
    unsafe { libc::kill(daemon, libc::SIGSTOP) };
    let first = podman_curl(&containerd, &format!("https://127.0.0.1:{port}/first.txt"));
    // The first container's lookup gives up after its second (cri::LOOKUP_TIMEOUT) on the
    // CRI thread; the second container comes after that, within the 30 s pause.
    std::thread::sleep(Duration::from_secs(2));
    let second = podman_curl(&containerd, &format!("https://127.0.0.1:{port}/second.txt"));
    // SAFETY: as above.
    unsafe { libc::kill(daemon, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(500));
    let run = trace.stop_lines();
    assert!(run.status.success(), "{}", run.stderr);
    // Both containers' exchanges are there, by id, without pod names.
    for (id, path) in [(&first, "/first.txt"), (&second, "/second.txt")] {
        let request = run
            .lines
            .iter()
            .find(|line| {
                line["type"] == "http_head" && line["part"] == "request" && line["path"] == path
            })
            .unwrap_or_else(|| panic!("no request for {path}:\n{}", run.stderr));
        assert_eq!(request["container"]["id"], id.as_str(), "{request}");
        assert!(request["container"]["pod"].is_null(), "{request}");
    }
    // The first container's lookup timed out and failed; the second, met within the pause
    // that follows, was not asked: both counted. The data path did not wait for either.
    let cri = &run.report["cri"];
    assert!(cri["failed"].as_u64() >= Some(1), "{cri}");
    assert!(
        cri["not_asked_runtime_failing"].as_u64() >= Some(1),
        "{cri}"
    );
    assert_eq!(cri["pods_named"], 0, "{cri}");
}
