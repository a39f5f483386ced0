//! The deployment examples in `deploy/` parse, and every flag and path they give the binary
//! exists: flags in `herd serve --help`, config files that the herd accepts, directories that
//! the unit or the pod actually provides.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::HERD;
use yaml_rust2::{Yaml, YamlLoader};

/// A herd secret of the length a node insists on, for parsing the example configs.
const SECRET: &[u8] = b"9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c";

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// Every `--flag` that `herd serve --help` lists.
fn serve_flags() -> Vec<String> {
    let out = Command::new(HERD)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(',').to_owned())
        .collect()
}

/// The `--flag VALUE` pairs of a `herd serve NAME ...` command line, after checking that every
/// flag exists.
fn serve_options(argv: &[String], what: &str) -> BTreeMap<String, String> {
    assert!(argv[0].ends_with("/herd"), "{what}: runs {:?}", argv[0]);
    assert_eq!(argv[1], "serve", "{what}");
    let known = serve_flags();
    let mut options = BTreeMap::new();
    let mut rest = argv[3..].iter();
    while let Some(flag) = rest.next() {
        assert!(
            known.contains(flag),
            "{what}: {flag} is not an option of `herd serve` ({known:?})"
        );
        let value = rest
            .next()
            .unwrap_or_else(|| panic!("{what}: {flag} has no value"));
        options.insert(flag.clone(), value.clone());
    }
    options
}

/// A systemd unit file: `[Section]` → key → values (keys may repeat).
fn parse_unit(text: &str, what: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .unwrap_or_else(|| panic!("{what}:{}: bad section {line:?}", n + 1));
            current = Some(name.to_owned());
            sections.entry(name.to_owned()).or_default();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{what}:{}: not key=value: {line:?}", n + 1));
        assert!(!line.ends_with('\\'), "{what}:{}: no continuations", n + 1);
        let section = current
            .clone()
            .unwrap_or_else(|| panic!("{what}:{}: a key outside any section", n + 1));
        sections
            .get_mut(&section)
            .unwrap()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    sections
}

#[test]
fn the_systemd_unit_runs_serve_with_the_directories_it_creates() {
    let path = deploy("systemd/herd@.service");
    let unit = parse_unit(&std::fs::read_to_string(&path).unwrap(), "herd@.service");
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        let values = service
            .get(key)
            .unwrap_or_else(|| panic!("[Service] {key} missing"));
        assert_eq!(values.len(), 1, "{key} given more than once");
        &values[0]
    };
    assert_eq!(one("User"), "herd", "a dedicated user");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("RestartPreventExitStatus"), "2");
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 65_536);
    for hardening in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "RestrictAddressFamilies",
        "CapabilityBoundingSet",
    ] {
        assert!(service.contains_key(hardening), "{hardening} missing");
    }
    assert_eq!(one("ProtectSystem"), "strict");
    assert!(unit["Install"].contains_key("WantedBy"));

    let argv: Vec<String> = one("ExecStart")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(argv[2], "%i", "the instance name is the server's name");
    let options = serve_options(&argv, "ExecStart");
    // ProtectSystem=strict leaves only these writable: the store and the log must be in them.
    assert_eq!(
        options["--state-dir"],
        format!("/var/lib/{}", one("StateDirectory"))
    );
    assert_eq!(
        options["--log-dir"],
        format!("/var/log/{}", one("LogsDirectory"))
    );
    assert_eq!(options["--config"], "/etc/herd/herd.toml");

    // The user exists by the sysusers file; the example config is one the herd accepts.
    let sysusers = std::fs::read_to_string(deploy("systemd/herd.sysusers.conf")).unwrap();
    assert!(sysusers
        .lines()
        .any(|l| l.split_whitespace().take(2).eq(["u", "herd"])));
    let text = std::fs::read_to_string(deploy("systemd/herd.toml")).unwrap();
    let config =
        herd::config::Config::parse(&text, "deploy/systemd/herd.toml", Some(SECRET.to_vec()))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.servers.len(), 3);
    assert_eq!(config.admin.len(), 3);
    assert!(text.contains("secret_file = \"/etc/herd/secret\""));
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {y:?}"))
}

#[test]
fn the_kubernetes_statefulset_runs_serve_with_what_the_pod_provides() {
    let text = std::fs::read_to_string(deploy("kubernetes/herd.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("valid YAML");
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k} in herd.yaml"))
    };
    let service = kind("Service");
    let config_map = kind("ConfigMap");
    let set = kind("StatefulSet");

    // A headless Service, named as the StatefulSet's serviceName.
    assert!(service["spec"]["clusterIP"].as_str() == Some("None"));
    let service_name = str_of(&service["metadata"]["name"], "Service name");
    assert_eq!(
        str_of(&set["spec"]["serviceName"], "serviceName"),
        service_name
    );
    let namespace = str_of(&set["metadata"]["namespace"], "namespace");
    let set_name = str_of(&set["metadata"]["name"], "StatefulSet name");
    let replicas = set["spec"]["replicas"].as_i64().expect("replicas");

    // The config lists every pod by its stable DNS name, and the herd accepts it.
    let toml = str_of(&config_map["data"]["herd.toml"], "herd.toml");
    let config = herd::config::Config::parse(toml, "herd.yaml herd.toml", Some(SECRET.to_vec()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.servers.len() as i64, replicas);
    for i in 0..replicas {
        let pod = format!("{set_name}-{i}");
        let addr = &config.servers[&pod];
        assert!(
            addr.starts_with(&format!("{pod}.{service_name}.{namespace}.svc.")),
            "{pod} listed at {addr}"
        );
    }

    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let argv: Vec<String> = container["command"]
        .as_vec()
        .expect("command")
        .iter()
        .map(|a| str_of(a, "command").to_owned())
        .collect();
    assert_eq!(
        argv[2], "$(POD_NAME)",
        "each pod runs the server named as itself"
    );
    let options = serve_options(&argv, "the container's command");

    let env = container["env"].as_vec().expect("env");
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("env {name} missing"))
    };
    assert_eq!(
        str_of(
            &var("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
            "POD_NAME"
        ),
        "metadata.name"
    );
    let secret = &var("HERD_SECRET")["valueFrom"]["secretKeyRef"];
    assert!(secret["name"].as_str().is_some() && secret["key"].as_str().is_some());

    // Where each path the command names comes from.
    let mounts: BTreeMap<String, String> = container["volumeMounts"]
        .as_vec()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            (
                str_of(&m["mountPath"], "mountPath").to_owned(),
                str_of(&m["name"], "mount name").to_owned(),
            )
        })
        .collect();
    let claims: Vec<&str> = set["spec"]["volumeClaimTemplates"]
        .as_vec()
        .expect("volumeClaimTemplates")
        .iter()
        .map(|c| str_of(&c["metadata"]["name"], "claim"))
        .collect();
    let state = &mounts[&options["--state-dir"]];
    assert!(
        claims.contains(&state.as_str()),
        "the store is on a PersistentVolumeClaim per pod"
    );
    assert!(
        mounts.contains_key(&options["--log-dir"]),
        "log dir mounted"
    );
    let config_dir = Path::new(&options["--config"]).parent().unwrap();
    let config_volume = &mounts[config_dir.to_str().unwrap()];
    let volume = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some(config_volume))
        .expect("the config volume");
    assert_eq!(
        volume["configMap"]["name"].as_str(),
        config_map["metadata"]["name"].as_str()
    );
    assert!(options["--config"].ends_with("/herd.toml"));

    // Ready when /healthz says so, on the admin port the command opens.
    let probe = &container["readinessProbe"]["httpGet"];
    assert_eq!(str_of(&probe["path"], "probe path"), "/healthz");
    let admin_port = options["--admin"].rsplit_once(':').unwrap().1;
    assert_eq!(probe["port"].as_i64().unwrap().to_string(), admin_port);
}

#[test]
fn systemd_itself_accepts_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (the unit's syntax is still checked above)"
        );
        return;
    }
    // `verify` wants the instance and an ExecStart binary that exists: this build's.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(deploy("systemd/herd@.service")).unwrap();
    let unit = dir.path().join("herd@Bailey.service");
    std::fs::write(&unit, text.replace("/usr/local/bin/herd", HERD)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    // It exits 0 even for unknown keys and bad values; any line about the unit is a defect.
    assert!(
        out.status.success() && !said.contains("herd@Bailey.service"),
        "systemd-analyze verify: {said}"
    );
}
