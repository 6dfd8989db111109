//! The manifests of deploy/kubernetes/ parse as YAML and say what the
//! README promises: RuntimeClass `wisp` with handler `wisp`, a DaemonSet
//! that installs the shim and runs `wisp serve` with /dev/kvm, the state
//! directory and the socket from the host, a Job on the RuntimeClass, and
//! the containerd snippet that maps the handler to the shim.

use std::path::PathBuf;

use serde_yaml_ng::Value;

fn deploy(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(name)
}

/// The one YAML document of `name`, checked for `apiVersion` and `kind`.
fn manifest(name: &str, api_version: &str, kind: &str) -> Value {
    let text = std::fs::read_to_string(deploy(name)).unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(doc["apiVersion"].as_str(), Some(api_version), "{name}");
    assert_eq!(doc["kind"].as_str(), Some(kind), "{name}");
    doc
}

/// The string at `v`, or a failure naming `what`.
fn str_at<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}

/// The entries of the sequence at `v`.
fn seq<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what} is not a list: {v:?}"))
        .as_slice()
}

#[test]
fn runtime_class_names_the_wisp_handler() {
    let rc = manifest("runtimeclass.yaml", "node.k8s.io/v1", "RuntimeClass");
    assert_eq!(str_at(&rc["metadata"]["name"], "name"), "wisp");
    assert_eq!(str_at(&rc["handler"], "handler"), "wisp");
}

#[test]
fn containerd_snippet_maps_the_handler_to_the_shim() {
    let text = std::fs::read_to_string(deploy("containerd-config.toml")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(
        lines,
        [
            r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wisp]"#,
            r#"runtime_type = "io.containerd.wisp.v1""#,
        ]
    );
}

#[test]
fn daemonset_installs_the_shim_and_serves_with_the_host_kvm_state_and_socket() {
    let ds = manifest("daemonset.yaml", "apps/v1", "DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    let selector = &ds["spec"]["selector"]["matchLabels"];
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    assert!(selector.as_mapping().is_some_and(|m| !m.is_empty()));
    for (k, v) in selector.as_mapping().unwrap() {
        assert_eq!(&labels[k], v, "the selector must match the pod's labels");
    }

    // hostPath volumes by name, with their paths.
    let volumes: Vec<(&str, &str)> = seq(&spec["volumes"], "volumes")
        .iter()
        .map(|v| {
            (
                str_at(&v["name"], "volume name"),
                str_at(&v["hostPath"]["path"], "hostPath"),
            )
        })
        .collect();
    for path in ["/dev/kvm", "/var/lib/wisp", "/run/wisp", "/usr/local/bin"] {
        assert!(
            volumes.iter().any(|(_, p)| *p == path),
            "no hostPath {path}: {volumes:?}"
        );
    }
    let volume_of = |path: &str| volumes.iter().find(|(_, p)| *p == path).unwrap().0;

    // The installer copies the shim into the host's bin directory.
    let init = &seq(&spec["initContainers"], "initContainers")[0];
    let script = seq(&init["command"], "command")
        .iter()
        .map(|a| str_at(a, "command"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(script.contains("containerd-shim-wisp-v1"), "{script}");
    let mounts_bin = seq(&init["volumeMounts"], "volumeMounts")
        .iter()
        .any(|m| m["name"].as_str() == Some(volume_of("/usr/local/bin")));
    assert!(mounts_bin, "the installer does not mount the host's bin");

    // `wisp serve` with the socket and state in the host's directories.
    let serve = &seq(&spec["containers"], "containers")[0];
    let args: Vec<&str> = seq(&serve["command"], "command")
        .iter()
        .map(|a| str_at(a, "command"))
        .collect();
    assert!(args
        .windows(2)
        .any(|w| w == ["wisp", "serve"] || w[1] == "serve"));
    let flag = |name: &str| {
        args.iter()
            .position(|a| *a == name)
            .map(|i| args[i + 1])
            .unwrap_or_else(|| panic!("wisp serve has no {name}: {args:?}"))
    };
    let mounted = |path: &str| {
        seq(&serve["volumeMounts"], "volumeMounts")
            .iter()
            .find(|m| m["name"].as_str() == Some(volume_of(path)))
            .map(|m| str_at(&m["mountPath"], "mountPath").to_string())
            .unwrap_or_else(|| panic!("{path} is not mounted in wisp serve"))
    };
    assert!(flag("--socket").starts_with(&mounted("/run/wisp")));
    assert_eq!(flag("--state-dir"), mounted("/var/lib/wisp"));
    assert_eq!(mounted("/dev/kvm"), "/dev/kvm");

    // The same nodes as the RuntimeClass schedules wisp pods on.
    let rc = manifest("runtimeclass.yaml", "node.k8s.io/v1", "RuntimeClass");
    assert_eq!(spec["nodeSelector"], rc["scheduling"]["nodeSelector"]);
}

#[test]
fn example_job_runs_on_the_wisp_runtime_class() {
    let job = manifest("job-example.yaml", "batch/v1", "Job");
    let spec = &job["spec"]["template"]["spec"];
    assert_eq!(
        str_at(&spec["runtimeClassName"], "runtimeClassName"),
        "wisp"
    );
    let container = &seq(&spec["containers"], "containers")[0];
    let command = seq(&container["command"], "command");
    assert!(
        str_at(&command[0], "command").ends_with(".wasm"),
        "args[0] names the module"
    );
    assert!(container["image"].as_str().is_some());
}
