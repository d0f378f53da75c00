//! What docs/deploying.md promises of the `Dockerfile`, `.dockerignore` and `deploy/kubernetes.yaml`, checked
//! here because neither a Docker engine nor a cluster is on the development machines: the files are parsed
//! (the Dockerfile as text, the manifest as YAML) and compared with each other, with Cargo.toml and with the
//! service's own configuration parser. The `healthcheck` subcommand the image's HEALTHCHECK runs is tested
//! against the real binary.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::process::Service;
use serde::Deserialize;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_dry-needling-cds");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---- Dockerfile ----

/// One instruction: its keyword in upper case and the rest of its (continued) lines.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// A build stage: its FROM image, its `AS` name and its instructions after FROM.
#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

/// Splits a Dockerfile into stages: comments and blank lines dropped, `\` continuations joined.
fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(start) = trimmed.strip_suffix('\\') {
            current.push_str(start);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
        instructions.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        });
        current.clear();
    }
    assert!(current.is_empty(), "the Dockerfile ends inside a continued line");
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction.args.split(' ').filter(|w| !w.starts_with("--")).collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                _ => panic!("FROM {}: expected `FROM image [AS name]`", instruction.args),
            };
            stages.push(Stage {
                image: words[0].to_string(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{} before the first FROM", instruction.keyword))
                .instructions
                .push(instruction);
        }
    }
    stages
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    }

    fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last().copied()
    }

    /// `ENV` values, in both `ENV KEY=VALUE ...` and `ENV KEY VALUE` forms (values without spaces or quotes).
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for args in self.all("ENV") {
            if !args.split(' ').next().unwrap_or_default().contains('=') {
                let (key, value) = args.split_once(' ').expect("ENV KEY VALUE");
                env.insert(key.to_string(), value.to_string());
                continue;
            }
            for pair in args.split(' ') {
                let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("ENV {args}: `{pair}`"));
                assert!(
                    !value.starts_with('"'),
                    "ENV {args}: quoted values are not read by this test"
                );
                env.insert(key.to_string(), value.to_string());
            }
        }
        env
    }
}

/// A JSON array (the exec form of CMD, ENTRYPOINT, HEALTHCHECK CMD).
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("`{args}` is not the exec form (a JSON array): {e}"))
}

fn port_of(address: &str) -> u16 {
    address
        .parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("`{address}` is not HOST:PORT: {e}"))
        .port()
}

fn cargo_rust_version() -> String {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    manifest["package"]["rust-version"].as_str().unwrap().to_string()
}

#[test]
fn dockerfile_builds_in_a_rust_stage_and_runs_the_binary_alone_as_a_non_root_user() {
    let stages = dockerfile_stages(&read("Dockerfile"));
    assert!(stages.len() >= 2, "multi-stage: {stages:#?}");
    for stage in &stages {
        assert!(stage.name.is_some(), "FROM {} has no `AS name`", stage.image);
    }
    let builder = &stages[0];
    let runtime = stages.last().unwrap();

    // The builder: the toolchain Cargo.toml asks for, a locked release build of the binary.
    let rust = format!("rust:{}", cargo_rust_version());
    assert!(
        builder.image.starts_with(&rust),
        "the builder is {}, Cargo.toml's rust-version asks for {rust}",
        builder.image
    );
    let runs = builder.all("RUN").join("\n");
    assert!(
        runs.contains("cargo build --release --locked --bin dry-needling-cds"),
        "no locked release build of the binary in {runs}"
    );

    // The runtime: distroless, only the binary (and the store's empty directory), not root.
    assert!(runtime.image.starts_with("gcr.io/distroless/cc"), "{}", runtime.image);
    let copies = runtime.all("COPY");
    assert_eq!(
        copies.len(),
        2,
        "the runtime stage copies the binary and the data directory: {copies:?}"
    );
    let builder_name = builder.name.as_deref().unwrap();
    let binary = format!("--from={builder_name} /out/dry-needling-cds /usr/local/bin/dry-needling-cds");
    assert_eq!(copies[0], binary);
    assert_eq!(
        copies[1],
        format!("--from={builder_name} --chown=65532:65532 /out/data /var/lib/dry-needling-cds")
    );
    let user = runtime.last("USER").expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid != 0),
        "USER {user}: a numeric user other than root, so that runAsNonRoot can check it"
    );
    let entrypoint = exec_form(runtime.last("ENTRYPOINT").expect("ENTRYPOINT"));
    assert_eq!(entrypoint, ["/usr/local/bin/dry-needling-cds"]);
    assert_eq!(exec_form(runtime.last("CMD").expect("CMD")), ["serve"]);
}

#[test]
fn dockerfile_listens_everywhere_on_the_exposed_port_and_checks_its_own_health() {
    let stages = dockerfile_stages(&read("Dockerfile"));
    let runtime = stages.last().unwrap();
    let env = runtime.env();
    let listen = env.get("DRY_NEEDLING_CDS_LISTEN").expect("ENV DRY_NEEDLING_CDS_LISTEN");
    let address: SocketAddr = listen.parse().unwrap();
    assert!(
        address.ip().is_unspecified(),
        "{listen}: reachable from outside the container"
    );
    assert_eq!(env.get("DRY_NEEDLING_CDS_LOG_FORMAT").map(String::as_str), Some("json"));
    let exposed: Vec<u16> = runtime
        .all("EXPOSE")
        .iter()
        .flat_map(|args| args.split(' '))
        .map(|port| port.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert!(
        exposed.contains(&address.port()),
        "EXPOSE {exposed:?} lacks the listen port {listen}"
    );
    assert!(exposed.contains(&9464), "EXPOSE {exposed:?} lacks the metrics port");

    let healthcheck = runtime.last("HEALTHCHECK").expect("HEALTHCHECK");
    let command = healthcheck
        .split_once(" CMD ")
        .map(|(_, command)| command)
        .or_else(|| healthcheck.strip_prefix("CMD "))
        .unwrap_or_else(|| panic!("HEALTHCHECK {healthcheck}: no CMD"));
    let entrypoint = exec_form(runtime.last("ENTRYPOINT").unwrap());
    assert_eq!(
        exec_form(command),
        [entrypoint[0].as_str(), "healthcheck"],
        "the health check is the binary's own subcommand (no curl in the image)"
    );
    let timeout = healthcheck
        .split(' ')
        .find_map(|option| option.strip_prefix("--timeout="))
        .expect("HEALTHCHECK --timeout=");
    let seconds: u64 = timeout.strip_suffix('s').unwrap().parse().unwrap();
    assert!(
        seconds > 2,
        "HEALTHCHECK --timeout={timeout}: the subcommand itself gives up after 2 s"
    );
}

/// Docker's `.dockerignore` matching, for the patterns used here: `*` within a path component, `**` for any
/// number of components, and a match on a directory excludes everything below it.
fn ignored(patterns: &[String], path: &str) -> bool {
    fn component(pattern: &str, name: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == name,
            Some((head, tail)) => {
                name.starts_with(head)
                    && (0..=name.len() - head.len()).any(|skip| component(tail, &name[head.len() + skip..]))
            }
        }
    }
    fn matches(pattern: &[&str], path: &[&str]) -> bool {
        match (pattern.first(), path.first()) {
            (None, _) => true, // the pattern matched a directory of the path
            (Some(&"**"), _) => (0..=path.len()).any(|skip| matches(&pattern[1..], &path[skip..])),
            (Some(p), Some(name)) => component(p, name) && matches(&pattern[1..], &path[1..]),
            (Some(_), None) => false,
        }
    }
    let path: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for pattern in patterns {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern.as_str()),
        };
        let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        if matches(&pattern, &path) {
            excluded = !negated;
        }
    }
    excluded
}

#[test]
fn dockerignore_keeps_everything_the_build_reads() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect();
    // The matcher itself, on what the file must leave out.
    for left_out in [
        "target",
        "target/release/dry-needling-cds",
        "crates/fhir-check/target",
        ".git/HEAD",
    ] {
        assert!(ignored(&patterns, left_out), "{left_out} is sent to the builder");
    }
    // What cargo reads, and every directory or file the sources embed with include_dir!/include_str!.
    let mut needed: Vec<String> = ["Cargo.toml", "Cargo.lock", "build.rs", "src/main.rs", "src/lib.rs"]
        .map(String::from)
        .to_vec();
    needed.push("crates/fhir-check/Cargo.toml".to_string());
    needed.push("crates/fhir-check/src/lib.rs".to_string());
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    for bench in manifest["bench"].as_array().unwrap() {
        needed.push(format!("benches/{}.rs", bench["name"].as_str().unwrap()));
    }
    let mut embedded = 0;
    for file in rust_files(&Path::new(ROOT).join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("include_dir!(\"$CARGO_MANIFEST_DIR/") {
            let rest = &text[at + "include_dir!(\"$CARGO_MANIFEST_DIR/".len()..];
            needed.push(rest[..rest.find('"').unwrap()].to_string());
            embedded += 1;
        }
    }
    assert!(
        embedded >= 3,
        "the embedded directories (cards/, the workbench, its patients) were not found"
    );
    for path in &needed {
        assert!(Path::new(ROOT).join(path).exists(), "{path} does not exist");
        assert!(
            !ignored(&patterns, path),
            "{path} is needed by the build but .dockerignore leaves it out"
        );
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

// ---- deploy/kubernetes.yaml ----

fn manifest() -> Vec<Value> {
    let text = read("deploy/kubernetes.yaml");
    serde_norway::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

fn one<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = documents.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in deploy/kubernetes.yaml");
    found[0]
}

/// The container's plain `value` variables (those from a Secret, `valueFrom`, are left out).
fn env_of(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter(|var| var.get("valueFrom").is_none())
        .map(|var| {
            let value = var["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{var}: a plain string value"));
            (var["name"].as_str().unwrap().to_string(), value.to_string())
        })
        .collect()
}

/// The image's SQLite directory exists, belongs to the user the service runs as (distroless has no shell to make
/// it at start), and is a volume.
#[test]
fn the_image_has_a_data_directory_for_its_user() {
    let runtime = dockerfile_stages(&read("Dockerfile")).pop().unwrap();
    let env = runtime.env();
    let dir = env
        .get("DRY_NEEDLING_CDS_DATA_DIR")
        .expect("ENV DRY_NEEDLING_CDS_DATA_DIR");
    assert!(
        runtime
            .all("COPY")
            .iter()
            .any(|args| args.contains("--chown=65532:65532") && args.ends_with(dir.as_str())),
        "a COPY --chown=65532:65532 makes {dir}"
    );
    assert!(
        runtime.all("VOLUME").iter().any(|args| args.contains(dir.as_str())),
        "VOLUME {dir}"
    );
}

/// Several replicas share one PostgreSQL store, whose URL (with its password) comes from a Secret, never from the
/// ConfigMap.
#[test]
fn replicas_share_a_postgres_store_whose_url_is_a_secret() {
    let documents = manifest();
    let deployment = one(&documents, "Deployment");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() > 1);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let url = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|var| var["name"] == "DRY_NEEDLING_CDS_POSTGRES_URL")
        .expect("DRY_NEEDLING_CDS_POSTGRES_URL");
    assert!(url["valueFrom"]["secretKeyRef"]["name"].is_string(), "{url}");
    let text = one(&documents, "ConfigMap")["data"]["config.toml"].as_str().unwrap();
    let config = dry_needling_cds::config::Config::parse(text, Path::new("/etc/dry-needling-cds")).unwrap();
    assert!(
        matches!(
            config.store.backend,
            Some(dry_needling_cds::store::StoreConfig::Postgres { .. })
        ),
        "the ConfigMap chooses PostgreSQL"
    );
    assert!(!text.contains("postgres://"), "no URL (or password) in the ConfigMap");
}

fn container_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|port| port["name"] == name)
        .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

/// The ConfigMap's config.toml, through the service's own parser.
fn configuration(documents: &[Value]) -> (String, dry_needling_cds::config::Config) {
    let config_map = one(documents, "ConfigMap");
    let text = config_map["data"]["config.toml"]
        .as_str()
        .expect("data: config.toml")
        .to_string();
    let config = dry_needling_cds::config::Config::parse(&text, Path::new("/etc/dry-needling-cds"))
        .unwrap_or_else(|e| panic!("the ConfigMap's config.toml is refused by the service: {e}"));
    (text, config)
}

#[test]
fn manifest_configuration_is_accepted_by_the_service_and_trusts_an_ehr() {
    let documents = manifest();
    let (_, config) = configuration(&documents);
    assert!(
        config
            .public_base_url
            .as_deref()
            .is_some_and(|url| url.starts_with("https://"))
    );
    assert_eq!(config.clients.len(), 1, "one trusted EHR, as in config/example.toml");
    let client = &config.clients[0];
    assert!(client.jwks_url.is_some(), "the EHR's keys come from its jwks_url");
    assert!(!client.fhir.servers.is_empty(), "the EHR's FHIR server is allowlisted");
}

#[test]
fn manifest_runs_two_non_root_replicas_probed_on_healthz_and_readyz() {
    let documents = manifest();
    let deployment = one(&documents, "Deployment");
    assert_eq!(deployment["apiVersion"], "apps/v1");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"];
    let labels = pod["metadata"]["labels"].as_object().expect("pod labels");
    for (key, value) in deployment["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(labels.get(key), Some(value), "the selector does not select the pods");
    }
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let env = env_of(container);

    // Ports: http is the listen port, which the Dockerfile exposes; metrics is the metrics address's port.
    let http = container_port(container, "http");
    let listen = env.get("DRY_NEEDLING_CDS_LISTEN").expect("DRY_NEEDLING_CDS_LISTEN");
    assert_eq!(u64::from(port_of(listen)), http);
    let image_env = dockerfile_stages(&read("Dockerfile")).pop().unwrap().env();
    assert_eq!(
        Some(listen),
        image_env.get("DRY_NEEDLING_CDS_LISTEN"),
        "the image's and the pod's ports differ"
    );
    let metrics = container_port(container, "metrics");
    let metrics_listen = env
        .get("DRY_NEEDLING_CDS_METRICS_LISTEN")
        .expect("DRY_NEEDLING_CDS_METRICS_LISTEN");
    assert_eq!(u64::from(port_of(metrics_listen)), metrics);
    assert_ne!(http, metrics);
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], metrics.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // Probes on the named http port.
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "http", "{probe}");
    }

    // Not root, nothing to escalate to, nothing to write.
    let pod_security = &pod["spec"]["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    let uid = pod_security["runAsUser"].as_u64().expect("runAsUser");
    assert_ne!(uid, 0);
    let image_user = dockerfile_stages(&read("Dockerfile"))
        .pop()
        .unwrap()
        .last("USER")
        .unwrap()
        .to_string();
    assert_eq!(
        image_user.split(':').next(),
        Some(uid.to_string().as_str()),
        "the image's user"
    );
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert!(
        security["capabilities"]["drop"]
            .as_array()
            .unwrap()
            .contains(&Value::from("ALL")),
        "capabilities: drop ALL"
    );
    assert_ne!(security["runAsUser"], 0);
    assert_ne!(security["runAsNonRoot"], false);

    // Requests and limits for both CPU and memory.
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource}"
            );
        }
    }
}

#[test]
fn manifest_points_the_service_at_the_mounted_configuration() {
    let documents = manifest();
    let deployment = one(&documents, "Deployment");
    let config_map_name = one(&documents, "ConfigMap")["metadata"]["name"].as_str().unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let config_path = env_of(container)
        .remove("DRY_NEEDLING_CDS_CONFIG")
        .expect("DRY_NEEDLING_CDS_CONFIG");
    let (dir, file) = config_path.rsplit_once('/').unwrap();
    assert_eq!(file, "config.toml", "the ConfigMap's key");

    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing is mounted at {dir}"));
    assert_eq!(mount["readOnly"], true);
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees a ConfigMap's updates"
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .expect("the mounted volume");
    let sources: Vec<&Value> = match volume["projected"]["sources"].as_array() {
        Some(sources) => sources.iter().collect(),
        None => vec![volume],
    };
    let config_map = sources
        .iter()
        .map(|source| &source["configMap"])
        .find(|c| c["name"] == config_map_name)
        .unwrap_or_else(|| panic!("the volume at {dir} does not hold the ConfigMap {config_map_name}"));
    assert!(
        config_map.get("items").is_none(),
        "items would rename or drop config.toml"
    );
    for source in &sources {
        if let Some(secret) = source.get("secret") {
            assert_eq!(
                secret["optional"], true,
                "the keys Secret is optional: the example uses jwks_url"
            );
        }
    }
}

#[test]
fn manifest_lets_requests_finish_and_keeps_one_pod_through_disruptions() {
    let documents = manifest();
    let (_, config) = configuration(&documents);
    let deployment = one(&documents, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    // The service exits at most shutdown_grace + 1 s after SIGTERM (src/main.rs), which follows the preStop.
    let needed = pre_stop + config.serve.shutdown_grace.as_secs() + 1;
    assert!(
        grace > needed,
        "terminationGracePeriodSeconds {grace} must exceed {needed} s"
    );

    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selects_the_pods = |selector: &Value| {
        selector
            .as_object()
            .unwrap()
            .iter()
            .all(|(key, value)| &labels[key] == value)
    };
    let service = one(&documents, "Service");
    assert!(selects_the_pods(&service["spec"]["selector"]));
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert!(
        ports.iter().any(|port| port["targetPort"] == "http"),
        "the Service reaches the http port"
    );

    let budget = one(&documents, "PodDisruptionBudget");
    assert_eq!(budget["apiVersion"], "policy/v1");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert!(selects_the_pods(&budget["spec"]["selector"]["matchLabels"]));
    assert!(
        budget["spec"]["minAvailable"].as_u64() < deployment["spec"]["replicas"].as_u64(),
        "a drain could never evict a pod"
    );
}

// ---- the healthcheck subcommand, on the real binary ----

/// Runs `dry-needling-cds healthcheck ARGS` with `env`; its output and how long it took.
fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let started = Instant::now();
    let mut command = Command::new(BINARY);
    command
        .arg("healthcheck")
        .args(args)
        .env_remove("DRY_NEEDLING_CDS_LISTEN")
        .env_remove("DRY_NEEDLING_CDS_CONFIG")
        .env_remove("DRY_NEEDLING_CDS_CARDS");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    (output, started.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A loopback port on which nothing listens.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn healthcheck_passes_against_the_running_service() {
    // The real binary on a free loopback port, with an empty configuration (no trusted clients).
    let service = Service::start("");
    let port = service.address.port().to_string();

    let (output, _) = healthcheck(&["--listen", &format!("127.0.0.1:{port}")], &[]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(
        output.stderr.is_empty() && output.stdout.is_empty(),
        "a passing check prints nothing"
    );

    // As in the image: the port from the environment, where 0.0.0.0 means "every interface", so loopback is
    // asked. A configuration that cannot be read and a cards directory that does not exist change nothing:
    // the check runs before either is loaded.
    let (output, _) = healthcheck(
        &[],
        &[
            ("DRY_NEEDLING_CDS_LISTEN", &format!("0.0.0.0:{port}")),
            ("DRY_NEEDLING_CDS_CONFIG", "/nonexistent/config.toml"),
            ("DRY_NEEDLING_CDS_CARDS", "/nonexistent/cards"),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));

    let (output, _) = healthcheck(&["--url", &format!("http://127.0.0.1:{port}/readyz")], &[]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));

    // Another path that answers, but not 200.
    let (output, _) = healthcheck(&["--url", &format!("http://127.0.0.1:{port}/no-such-path")], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("404"), "stderr: {}", stderr(&output));
}

#[test]
fn healthcheck_fails_at_once_where_nothing_listens() {
    let port = closed_port();
    let (output, took) = healthcheck(&[], &[("DRY_NEEDLING_CDS_LISTEN", &format!("0.0.0.0:{port}"))]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    assert!(took < Duration::from_secs(2), "took {took:?} to find a closed port");
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "one line on stderr: {message:?}");
    assert!(message.contains(&format!("127.0.0.1:{port}/healthz")), "{message}");
}

#[test]
fn healthcheck_fails_on_an_error_status_and_gives_up_on_silence_after_2_s() {
    // A server that answers 503, as a service that is shutting down would.
    let refusing = TcpListener::bind("127.0.0.1:0").unwrap();
    let refusing_address = refusing.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = refusing.accept() {
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head);
            let _ =
                stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    let (output, _) = healthcheck(&["--listen", &refusing_address.to_string()], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("503"), "stderr: {}", stderr(&output));
    assert_eq!(stderr(&output).lines().count(), 1);

    // A server that accepts the connection (the kernel does, from the backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let (output, took) = healthcheck(&["--listen", &silent.local_addr().unwrap().to_string()], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "gave up after {took:?}, not about 2 s"
    );
    assert_eq!(stderr(&output).lines().count(), 1, "stderr: {}", stderr(&output));
    drop(silent);
}
