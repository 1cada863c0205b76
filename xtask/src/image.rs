//! `cargo xtask image`: builds `deploy/Dockerfile` with a real OCI builder and runs the image.
//!
//! This machine has no Docker engine and no route to Docker Hub or gcr.io, so the build runs in podman
//! (Debian's, with runc: crun cannot run on a cgroup v1/v2 hybrid host) and the Dockerfile's two base images
//! are stand-ins made here from Debian's own packages, under the names the Dockerfile asks for:
//! - `rust:<version>-bookworm`: Debian bookworm (debootstrap, minbase plus gcc and libc6-dev, as the official
//!   image's buildpack-deps base has) with this machine's pinned Rust toolchain, which must be the version the
//!   Dockerfile names, at `/usr/local/rustup` with `/usr/local/cargo/bin` on the PATH as in the official image,
//!   and this machine's CA bundle (cargo reaches crates.io from here through a TLS-inspecting proxy);
//! - `gcr.io/distroless/cc-debian12:nonroot`: what distroless assembles from the same Debian 12 packages
//!   (libc6, libgcc-s1, libstdc++6, libgomp1, libssl3, ca-certificates, tzdata, netbase, base-files) unpacked
//!   without running their scripts, no shell, `nonroot` = uid 65532, as distroless's image is.
//!
//! The Dockerfile itself is built unchanged. The image is then run as operators are told to run it: the
//! version and every `config/examples/*.toml` through `check-config`; `serve` with the config baked in, once
//! as `docker run` would with nothing mounted and once with a read-only root filesystem and a volume for the
//! data directory (as the Helm chart runs it); each time `/healthz` and `/readyz` must answer 200, a STUN
//! Binding request must get its success response from the TURN listener, the server process must run as
//! uid 65532, and `stop` (SIGTERM) must end it with exit status 0.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

const IMAGE: &str = "localhost/rtcplane:check";
const RUNTIME_BASE: &str = "gcr.io/distroless/cc-debian12:nonroot";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
/// What distroless's `cc-debian12` carries (its `base` plus the C and C++ runtimes).
const RUNTIME_PACKAGES: &[&str] = &[
    "base-files",
    "netbase",
    "tzdata",
    "ca-certificates",
    "libc6",
    "libgcc-s1",
    "libgomp1",
    "libstdc++6",
    "libssl3",
];

pub(crate) fn check(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_tools()?;
    let work = root.join("target/image");
    std::fs::create_dir_all(&work)?;
    let podman = Podman::new(&work)?;
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile"))
        .context("cannot read deploy/Dockerfile")?;
    let (builder, runtime) = base_images(&dockerfile)?;
    ensure!(
        runtime == RUNTIME_BASE,
        "deploy/Dockerfile's runtime image is {runtime}; this check knows how to stand in for {RUNTIME_BASE} only"
    );
    let toolchain = pinned_toolchain(root)?;
    let rust_tag = builder
        .strip_prefix("rust:")
        .and_then(|t| t.strip_suffix("-bookworm"))
        .with_context(|| {
            format!("deploy/Dockerfile builds FROM {builder}, expected rust:<version>-bookworm")
        })?;
    ensure!(
        toolchain == rust_tag || toolchain.starts_with(&format!("{rust_tag}.")),
        "deploy/Dockerfile builds with rust:{rust_tag} but rust-toolchain.toml pins {toolchain}: keep them equal"
    );

    let builder_name = format!("docker.io/library/{builder}");
    if podman.image_exists(&builder_name) {
        eprintln!("    {builder_name} (stand-in) is present");
    } else {
        make_builder(&podman, &work, &builder_name, &toolchain)?;
    }
    if podman.image_exists(RUNTIME_BASE) {
        eprintln!("    {RUNTIME_BASE} (stand-in) is present");
    } else {
        make_runtime(&podman, &work, RUNTIME_BASE)?;
    }

    eprintln!("==> podman build -f deploy/Dockerfile");
    let build_started = Instant::now();
    podman.run_ok(
        root,
        &[
            "build",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "--pull=never",
            "-f",
            "deploy/Dockerfile",
            "-t",
            IMAGE,
            ".",
        ],
    )?;
    eprintln!(
        "<== podman build: {:.0}s",
        build_started.elapsed().as_secs_f64()
    );

    check_image(&podman, root)?;
    eprintln!(
        "<== image checked in {:.0}s: builds from deploy/Dockerfile, runs as uid 65532, serves, stops cleanly",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn check_image(podman: &Podman, root: &Path) -> anyhow::Result<()> {
    let config = podman.output(&[
        "image",
        "inspect",
        IMAGE,
        "--format",
        "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{.Size}}",
    ])?;
    let fields: Vec<&str> = config.trim().split('|').collect();
    ensure!(
        fields.len() == 4,
        "unexpected image inspect output: {config}"
    );
    ensure!(
        fields[0] == "nonroot:nonroot",
        "the image runs as {:?}, expected nonroot:nonroot",
        fields[0]
    );
    let size_mib = fields[3].parse::<f64>().unwrap_or(0.0) / (1024.0 * 1024.0);
    eprintln!(
        "    user {}, entrypoint {}, cmd {}, size {size_mib:.0} MiB",
        fields[0], fields[1], fields[2]
    );

    let version = podman.output(&["run", "--rm", "--network", "none", IMAGE, "--version"])?;
    ensure!(
        version.starts_with("rtcplane "),
        "`rtcplane --version` in the image printed {version:?}"
    );
    eprintln!("    {}", version.trim());

    let examples = root.join("config/examples");
    let mount = format!("{}:/examples:ro", examples.display());
    let mut names: Vec<String> = std::fs::read_dir(&examples)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    ensure!(!names.is_empty(), "no config/examples/*.toml");
    for name in &names {
        let path = format!("/examples/{name}");
        podman
            .output(&[
                "run",
                "--rm",
                "--network",
                "none",
                "-v",
                &mount,
                IMAGE,
                "check-config",
                "--config",
                &path,
            ])
            .with_context(|| format!("check-config {name} in the image"))?;
        eprintln!("    check-config config/examples/{name}: ok");
    }

    serve(podman, "plain", &[])?;
    let volume = "rtcplane-image-check-data";
    let _ = podman.output(&["volume", "rm", "-f", volume]);
    serve(
        podman,
        "read-only root, data volume",
        &["--read-only", "-v", &format!("{volume}:/var/lib/rtcplane")],
    )?;
    let _ = podman.output(&["volume", "rm", "-f", volume]);
    Ok(())
}

/// Runs `serve` (the image's default command) on host networking with free loopback ports, and checks it.
fn serve(podman: &Podman, label: &str, extra: &[&str]) -> anyhow::Result<()> {
    let name = "rtcplane-image-check";
    let _ = podman.output(&["rm", "-f", name]);
    let public = free_tcp_port()?;
    let admin = free_tcp_port()?;
    let turn = free_udp_port()?;
    let env = [
        format!("RTCPLANE__HTTP__PUBLIC_LISTEN=127.0.0.1:{public}"),
        format!("RTCPLANE__HTTP__ADMIN_LISTEN=127.0.0.1:{admin}"),
        format!("RTCPLANE__TURN__LISTEN_UDP=127.0.0.1:{turn}"),
        format!("RTCPLANE__TURN__LISTEN_TCP=127.0.0.1:{turn}"),
        "RTCPLANE__SIP_AGENT__LISTEN=127.0.0.1:0".to_string(),
    ];
    let mut args: Vec<&str> = vec!["run", "-d", "--name", name, "--network", "host"];
    args.extend_from_slice(extra);
    for e in &env {
        args.extend_from_slice(&["-e", e]);
    }
    args.push(IMAGE);
    podman.output(&args)?;
    let result = probe(podman, name, admin, turn);
    let stopped = podman.output(&["stop", "-t", "30", name]);
    let exit = podman
        .output(&["inspect", name, "--format", "{{.State.ExitCode}}"])
        .unwrap_or_default();
    let logs = podman.output_all(&["logs", name]).unwrap_or_default();
    let _ = podman.output(&["rm", "-f", name]);
    if let Err(e) = result.and_then(|()| {
        stopped?;
        ensure!(
            exit.trim() == "0",
            "after `stop` the server exited with {}",
            exit.trim()
        );
        Ok(())
    }) {
        eprintln!("--- container logs ({label}) ---\n{logs}--- end of logs ---");
        return Err(e.context(format!("serve ({label})")));
    }
    eprintln!(
        "    serve ({label}): /healthz and /readyz 200, STUN Binding answered, uid 65532, stopped with status 0"
    );
    Ok(())
}

fn probe(podman: &Podman, name: &str, admin: u16, turn: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http_status(admin, "/readyz").ok() == Some(200) {
            break;
        }
        let running = podman
            .output(&["inspect", name, "--format", "{{.State.Running}}"])
            .unwrap_or_default();
        ensure!(running.trim() == "true", "the container stopped");
        ensure!(
            Instant::now() < deadline,
            "/readyz did not answer 200 within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        http_status(admin, "/healthz")? == 200,
        "/healthz did not answer 200"
    );
    stun_binding(turn)?;
    let pid = podman.output(&["inspect", name, "--format", "{{.State.Pid}}"])?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .context("cannot read the server's /proc status")?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .context("no Uid line")?;
    ensure!(
        uid.split_whitespace().all(|u| u == "65532"),
        "the server runs as uid {uid}, expected 65532"
    );
    Ok(())
}

fn http_status(port: u16, path: &str) -> anyhow::Result<u16> {
    let response = crate::http_get(port, path)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP response: {response:?}"))?;
    Ok(code)
}

/// A STUN Binding request (RFC 8489) to the TURN listener; the answer must be a success response with the
/// same transaction id.
fn stun_binding(port: u16) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = [0_u8; 20];
    request[0..2].copy_from_slice(&0x0001_u16.to_be_bytes());
    request[4..8].copy_from_slice(&0x2112_A442_u32.to_be_bytes());
    request[8..20].copy_from_slice(b"imagecheck01");
    let mut answer = [0_u8; 1500];
    for _ in 0..5 {
        socket.send_to(&request, ("127.0.0.1", port))?;
        if let Ok((n, _)) = socket.recv_from(&mut answer) {
            ensure!(
                n >= 20 && answer[0..2] == [0x01, 0x01] && answer[8..20] == request[8..20],
                "the TURN listener answered a Binding request with {:02x?}",
                &answer[..n.min(20)]
            );
            return Ok(());
        }
    }
    bail!("no answer to a STUN Binding request on udp 127.0.0.1:{port}")
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A port free for both UDP and TCP (the TURN listener takes both).
fn free_udp_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP")
}

/// The `FROM` images of the build and runtime stages.
fn base_images(dockerfile: &str) -> anyhow::Result<(String, String)> {
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("FROM "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    match froms.as_slice() {
        [build, runtime] => Ok(((*build).to_string(), (*runtime).to_string())),
        _ => bail!(
            "deploy/Dockerfile should have two stages (build, runtime); it has FROM {froms:?}"
        ),
    }
}

fn pinned_toolchain(root: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(root.join("rust-toolchain.toml"))?;
    let value: toml::Value = toml::from_str(&text)?;
    value
        .get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(toml::Value::as_str)
        .map(str::to_string)
        .context("rust-toolchain.toml has no toolchain.channel")
}

fn make_builder(podman: &Podman, work: &Path, name: &str, toolchain: &str) -> anyhow::Result<()> {
    eprintln!("==> stand-in {name}: debootstrap bookworm + the pinned Rust {toolchain}");
    let rootfs = work.join("builder-rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    run_ok(
        Command::new("debootstrap").args([
            "--variant=minbase",
            "--include=gcc,libc6-dev,ca-certificates,pkg-config,make,git",
            "bookworm",
            path_str(&rootfs)?,
            &mirror(),
        ]),
        "debootstrap",
    )?;
    // Cargo fetches crates over HTTPS: trust what this machine trusts (its route to crates.io may go through
    // a TLS-inspecting proxy whose CA only the host's bundle carries).
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        rootfs.join("etc/ssl/certs/ca-certificates.crt"),
    )
    .context("this machine has no /etc/ssl/certs/ca-certificates.crt")?;
    let sysroot = crate::output(
        Command::new("rustc").args(["--print", "sysroot"]),
        "rustc --print sysroot",
    )?;
    let version = crate::output(Command::new("rustc").arg("--version"), "rustc --version")?;
    ensure!(
        version.contains(&format!(" {toolchain} ")),
        "this machine's rustc is {version}, not the pinned {toolchain}"
    );
    let target_dir = format!("usr/local/rustup/toolchains/{toolchain}-x86_64-unknown-linux-gnu");
    let dest = rootfs.join(&target_dir);
    std::fs::create_dir_all(&dest)?;
    run_ok(
        Command::new("sh").args([
            "-c",
            "tar -C \"$1\" --exclude=./share/doc -cf - . | tar -C \"$2\" -xf -",
            "sh",
            sysroot.trim(),
            path_str(&dest)?,
        ]),
        "copy the toolchain",
    )?;
    let bin = rootfs.join("usr/local/cargo/bin");
    std::fs::create_dir_all(&bin)?;
    for tool in std::fs::read_dir(dest.join("bin"))? {
        let tool = tool?.file_name();
        std::os::unix::fs::symlink(
            Path::new("/").join(&target_dir).join("bin").join(&tool),
            bin.join(&tool),
        )?;
    }
    let rust_version = format!("ENV RUST_VERSION={toolchain}");
    podman.import(
        &rootfs,
        name,
        &[
            "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV RUSTUP_HOME=/usr/local/rustup",
            "ENV CARGO_HOME=/usr/local/cargo",
            &rust_version,
        ],
    )?;
    std::fs::remove_dir_all(&rootfs)?;
    Ok(())
}

fn make_runtime(podman: &Podman, work: &Path, name: &str) -> anyhow::Result<()> {
    eprintln!("==> stand-in {name}: Debian 12 packages unpacked, no shell, nonroot = 65532");
    let debs = work.join("runtime-debs");
    let rootfs = work.join("runtime-rootfs");
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(&rootfs);
    std::fs::create_dir_all(&debs)?;
    std::fs::create_dir_all(&rootfs)?;
    let download = |debs: &Path| {
        Command::new("apt-get")
            .arg("download")
            .args(RUNTIME_PACKAGES)
            .current_dir(debs)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download(&debs) {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        ensure!(
            download(&debs),
            "apt-get download {} failed",
            RUNTIME_PACKAGES.join(" ")
        );
    }
    for deb in std::fs::read_dir(&debs)? {
        let deb = deb?.path();
        run_ok(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&rootfs),
            "dpkg-deb -x",
        )?;
    }
    // ca-certificates builds its bundle in a maintainer script, which is not run: take the host's, as
    // distroless ships the generated bundle.
    std::fs::create_dir_all(rootfs.join("etc/ssl/certs"))?;
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        rootfs.join("etc/ssl/certs/ca-certificates.crt"),
    )
    .context("this machine has no /etc/ssl/certs/ca-certificates.crt")?;
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )?;
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n",
    )?;
    for dir in [
        "tmp",
        "root",
        "home/nonroot",
        "var/lib",
        "proc",
        "sys",
        "dev",
    ] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::os::unix::fs::chown(rootfs.join("home/nonroot"), Some(65532), Some(65532))?;
    ensure!(
        !rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin/sh").exists(),
        "the runtime stand-in must not have a shell"
    );
    podman.import(
        &rootfs,
        name,
        &[
            "USER 65532",
            "WORKDIR /home/nonroot",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        ],
    )?;
    std::fs::remove_dir_all(&rootfs)?;
    std::fs::remove_dir_all(&debs)?;
    Ok(())
}

fn mirror() -> String {
    std::env::var("DEBIAN_MIRROR").unwrap_or_else(|_| DEBIAN_MIRROR.to_string())
}

/// podman, runc (found by podman, not on the PATH) and debootstrap, from Debian's packages.
fn ensure_tools() -> anyhow::Result<()> {
    crate::services::ensure_installed(&[
        ("podman", "podman"),
        ("/usr/sbin/runc", "runc"),
        ("debootstrap", "debootstrap"),
    ])
}

/// podman with a containers.conf of the project's: runc, cgroupfs, and ulimits no higher than this process's
/// own hard limits (podman's defaults, `nofile` 1048576 and `nproc` above `pid_max`, cannot be set inside this
/// sandbox).
struct Podman {
    conf: PathBuf,
}

impl Podman {
    fn new(work: &Path) -> anyhow::Result<Self> {
        let limits = std::fs::read_to_string("/proc/self/limits")?;
        // "Max open files            20000                20000                files": the hard limit.
        let limit = |name: &str| -> anyhow::Result<String> {
            let line = limits
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .with_context(|| format!("no {name:?} in /proc/self/limits"))?;
            let hard = line
                .split_whitespace()
                .nth(1)
                .context("/proc/self/limits")?;
            Ok(if hard == "unlimited" {
                "-1".into()
            } else {
                hard.into()
            })
        };
        let nofile = limit("Max open files")?;
        // The kernel takes no nproc above pid_max (runc fails with EPERM otherwise).
        let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")?
            .trim()
            .parse()
            .context("/proc/sys/kernel/pid_max")?;
        let nproc = match limit("Max processes")?.parse::<u64>() {
            Ok(n) => n.min(pid_max),
            Err(_) => pid_max,
        };
        let conf = work.join("containers.conf");
        std::fs::write(
            &conf,
            format!(
                "# written by cargo xtask image\n[containers]\ndefault_ulimits = [\"nofile={n}:{n}\", \"nproc={p}:{p}\"]\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
                n = nofile,
                p = nproc,
            ),
        )?;
        Ok(Self { conf })
    }

    fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf);
        c
    }

    fn image_exists(&self, name: &str) -> bool {
        self.command()
            .args(["image", "exists", name])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs podman with its output on the terminal.
    fn run_ok(&self, dir: &Path, args: &[&str]) -> anyhow::Result<()> {
        run_ok(self.command().args(args).current_dir(dir), "podman")
    }

    /// podman's standard output; a failure carries its standard error.
    fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        crate::output(
            self.command().args(args),
            &format!("podman {}", args.join(" ")),
        )
    }

    /// Standard output and error together (container logs).
    fn output_all(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command().args(args).output()?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    fn import(&self, rootfs: &Path, name: &str, changes: &[&str]) -> anyhow::Result<()> {
        let mut tar = Command::new("tar")
            .args(["--numeric-owner", "-C", path_str(rootfs)?, "-cf", "-", "."])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot run tar")?;
        let stdout = tar.stdout.take().context("tar stdout")?;
        let mut import = self.command();
        import.arg("import");
        for change in changes {
            import.args(["--change", change]);
        }
        let status = import
            .args(["-", name])
            .stdin(stdout)
            .stdout(Stdio::null())
            .status()
            .context("cannot run podman import")?;
        ensure!(tar.wait()?.success(), "tar of {} failed", rootfs.display());
        ensure!(status.success(), "podman import {name} failed");
        Ok(())
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("non-UTF-8 path")
}

fn run_ok(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}
