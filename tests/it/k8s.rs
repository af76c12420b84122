//! The Kubernetes manifests (`k8s/`, built with `kubectl kustomize`) keep the contract the binary
//! serves: ports, gRPC health service names, HTTP health paths, the graceful-shutdown budget, the
//! hardened security context, and a Secret template without real values. Skipped (with a message)
//! when kubectl is not installed.

use figment::{Figment, providers::Serialized};
use mp_auth::config::Settings;
use serde_json::Value;
use std::{collections::BTreeMap, path::PathBuf, process::Command, sync::OnceLock};

// The contract, in one place: the names and paths come from the binary's own constants;
// the ports are checked against the configuration defaults below.
const GRPC_PORT: u16 = 50051;
const SERVER_METRICS_PORT: u16 = 9090;
const GATEWAY_HTTP_PORT: u16 = 8080;
const GATEWAY_PROBE_PORT: u16 = 8081;
const GATEWAY_METRICS_PORT: u16 = 9091;
const METRICS_PATH: &str = "/metrics";
/// grpc.health.v1 service that stays SERVING while the process is alive.
const LIVENESS_SERVICE: &str = mp_auth::api::health::HEALTH_LIVENESS;
/// grpc.health.v1 service that is SERVING only when the database answers and migrations are current.
const READINESS_SERVICE: &str = mp_auth::api::health::HEALTH_AUTH;
const HEALTHZ_PATH: &str = mp_auth::gateway::HEALTHZ_PATH;
const READYZ_PATH: &str = mp_auth::gateway::READYZ_PATH;
const SERVER_DRAIN_ENV: &str = "MP_AUTH_GRPC__DRAIN_TIMEOUT_MS";
const GATEWAY_DRAIN_ENV: &str = "MP_AUTH_GATEWAY__DRAIN_TIMEOUT_MS";
const DEFAULT_DRAIN_TIMEOUT_MS: i64 = 10_000;
const NON_ROOT_UID: i64 = 65532;
const IMAGE: &str = "mp-auth:0.1.0";
const SECRET_MOUNT_DIR: &str = "/var/run/secrets/mp-auth/";
const SECRET_PLACEHOLDER: &str = "REPLACE_ME";

const SERVER: &str = "mp-auth-server";
const GATEWAY: &str = "mp-auth-gateway";
const MIGRATE: &str = "mp-auth-migrate";

fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every object of `kubectl kustomize k8s/`, or `None` when kubectl is not installed.
fn manifests() -> Option<&'static [Value]> {
    static BUILT: OnceLock<Option<Vec<Value>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let output = match Command::new("kubectl")
            .arg("kustomize")
            .arg(repo_path("k8s"))
            .output()
        {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("could not run kubectl: {e}"),
        };
        assert!(
            output.status.success(),
            "kubectl kustomize k8s/ failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(parse_yaml_documents(
            &String::from_utf8(output.stdout).unwrap(),
        ))
    });
    if built.is_none() {
        eprintln!("skipping: kubectl is not installed, so `kubectl kustomize k8s/` cannot run");
    }
    built.as_deref()
}

fn parse_yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_norway::Deserializer::from_str(text)
        .map(|doc| serde_norway::Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .map(|doc| serde_json::to_value(doc).unwrap())
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the build has no {kind} {name}"))
}

fn pod_templates(objects: &[Value]) -> Vec<(String, &Value)> {
    objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "Job")))
        .map(|o| {
            let name = format!("{} {}", o["kind"].as_str().unwrap(), o["metadata"]["name"]);
            (name, &o["spec"]["template"])
        })
        .collect()
}

/// The one container of a Deployment or Job.
fn container(workload: &Value) -> &Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// The container's environment as the kubelet builds it: `envFrom` ConfigMaps, then `env`.
fn environment(objects: &[Value], container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .expect("only ConfigMaps feed envFrom");
        let data = object(objects, "ConfigMap", name)["data"]
            .as_object()
            .unwrap();
        for (k, v) in data {
            env.insert(k.clone(), v.as_str().unwrap().to_owned());
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let value = var["value"].as_str().unwrap_or_else(|| {
            panic!(
                "env {} must be a plain value, not a secret reference",
                var["name"]
            )
        });
        env.insert(var["name"].as_str().unwrap().to_owned(), value.to_owned());
    }
    env
}

fn port_named<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("container {} has no port named {name}", container["name"]))
}

/// A probe's port as a number, resolving a named container port.
fn probe_port(container: &Value, port: &Value) -> i64 {
    match port {
        Value::String(name) => port_named(container, name)["containerPort"]
            .as_i64()
            .unwrap(),
        other => other.as_i64().unwrap(),
    }
}

#[test]
fn server_container_serves_grpc_and_metrics_on_the_contract_ports() {
    let Some(objects) = manifests() else { return };
    let server = container(object(objects, "Deployment", SERVER));
    assert_eq!(server["args"], serde_json::json!(["serve"]));
    assert_eq!(port_named(server, "grpc")["containerPort"], GRPC_PORT);
    assert_eq!(
        port_named(server, "metrics")["containerPort"],
        SERVER_METRICS_PORT
    );
    let env = environment(objects, server);
    assert_eq!(env["MP_AUTH_GRPC__LISTEN"], format!("0.0.0.0:{GRPC_PORT}"));
    assert_eq!(
        env["MP_AUTH_ADMIN__METRICS_LISTEN"],
        format!("0.0.0.0:{SERVER_METRICS_PORT}")
    );
    let annotations =
        &object(objects, "Deployment", SERVER)["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"],
        SERVER_METRICS_PORT.to_string()
    );
    assert_eq!(annotations["prometheus.io/path"], METRICS_PATH);
}

#[test]
fn server_service_exposes_the_named_grpc_port_as_h2c() {
    let Some(objects) = manifests() else { return };
    let service = object(objects, "Service", SERVER);
    assert_eq!(service["spec"]["type"], "ClusterIP");
    let ports = service["spec"]["ports"].as_array().unwrap();
    let grpc = ports.iter().find(|p| p["name"] == "grpc").unwrap();
    assert_eq!(grpc["port"], GRPC_PORT);
    assert_eq!(grpc["targetPort"], "grpc");
    assert_eq!(grpc["appProtocol"], "kubernetes.io/h2c");
    let metrics = ports.iter().find(|p| p["name"] == "metrics").unwrap();
    assert_eq!(metrics["port"], SERVER_METRICS_PORT);
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/component"],
        "server"
    );
}

#[test]
fn server_probes_ask_grpc_health_for_liveness_and_for_the_auth_service() {
    let Some(objects) = manifests() else { return };
    let server = container(object(objects, "Deployment", SERVER));
    for (probe, service) in [
        ("livenessProbe", LIVENESS_SERVICE),
        ("readinessProbe", READINESS_SERVICE),
        ("startupProbe", READINESS_SERVICE),
    ] {
        let grpc = &server[probe]["grpc"];
        assert_eq!(grpc["port"], GRPC_PORT, "{probe}");
        assert_eq!(grpc["service"], service, "{probe}");
    }
}

#[test]
fn gateway_serves_http_and_metrics_and_probes_healthz_and_readyz() {
    let Some(objects) = manifests() else { return };
    let gateway = container(object(objects, "Deployment", GATEWAY));
    assert_eq!(gateway["args"], serde_json::json!(["gateway"]));
    assert_eq!(
        port_named(gateway, "http")["containerPort"],
        GATEWAY_HTTP_PORT
    );
    assert_eq!(
        port_named(gateway, "metrics")["containerPort"],
        GATEWAY_METRICS_PORT
    );
    for (probe, path) in [
        ("livenessProbe", HEALTHZ_PATH),
        ("readinessProbe", READYZ_PATH),
    ] {
        let http = &gateway[probe]["httpGet"];
        assert_eq!(http["path"], path, "{probe}");
        assert_eq!(
            probe_port(gateway, &http["port"]),
            i64::from(GATEWAY_PROBE_PORT),
            "{probe}: kubelet probes use the probe listener, out of reach of floods"
        );
    }
    let env = environment(objects, gateway);
    assert_eq!(
        env["MP_AUTH_GATEWAY__LISTEN"],
        format!("0.0.0.0:{GATEWAY_HTTP_PORT}")
    );
    assert_eq!(
        env["MP_AUTH_GATEWAY__PROBE_LISTEN"],
        format!("0.0.0.0:{GATEWAY_PROBE_PORT}")
    );
    assert_eq!(
        env["MP_AUTH_ADMIN__METRICS_LISTEN"],
        format!("0.0.0.0:{GATEWAY_METRICS_PORT}")
    );
    let annotations =
        &object(objects, "Deployment", GATEWAY)["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"],
        GATEWAY_METRICS_PORT.to_string()
    );
    assert_eq!(annotations["prometheus.io/path"], METRICS_PATH);
}

#[test]
fn gateway_forwards_to_the_server_service_and_holds_no_secrets() {
    let Some(objects) = manifests() else { return };
    let deployment = object(objects, "Deployment", GATEWAY);
    let gateway = container(deployment);
    let env = environment(objects, gateway);
    assert_eq!(
        env["MP_AUTH_GATEWAY__BACKEND_URL"],
        format!("http://{SERVER}:{GRPC_PORT}")
    );
    assert!(
        deployment["spec"]["template"]["spec"]["volumes"].is_null(),
        "the gateway mounts nothing"
    );
    for key in env.keys() {
        assert!(
            !(key.starts_with("MP_AUTH_APPS")
                || key.starts_with("MP_AUTH_DATABASE")
                || key.starts_with("MP_AUTH_TOKEN")
                || key.starts_with("MP_AUTH_SESSION_KEYS")
                || key == "DATABASE_URL"),
            "the gateway must not be configured with {key}"
        );
    }
}

#[test]
fn termination_grace_period_exceeds_pre_stop_sleep_plus_drain() {
    let Some(objects) = manifests() else { return };
    for (name, drain_env) in [(SERVER, SERVER_DRAIN_ENV), (GATEWAY, GATEWAY_DRAIN_ENV)] {
        let deployment = object(objects, "Deployment", name);
        let c = container(deployment);
        let pre_stop_secs = c["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_i64()
            .unwrap_or_else(|| panic!("{name} needs a preStop sleep action"));
        assert!(pre_stop_secs > 0, "{name}");
        let drain_ms = environment(objects, c)
            .get(drain_env)
            .map_or(DEFAULT_DRAIN_TIMEOUT_MS, |v| v.parse().unwrap());
        let grace_secs = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap();
        assert!(
            grace_secs * 1000 > pre_stop_secs * 1000 + drain_ms,
            "{name}: terminationGracePeriodSeconds {grace_secs} s must exceed preStop {pre_stop_secs} s + drain {drain_ms} ms"
        );
    }
}

#[test]
fn every_pod_runs_as_non_root_with_a_read_only_root_and_no_capabilities() {
    let Some(objects) = manifests() else { return };
    let templates = pod_templates(objects);
    assert_eq!(templates.len(), 3, "server, gateway and migration Job");
    for (name, template) in templates {
        let pod = &template["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["runAsUser"], NON_ROOT_UID, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        let containers = pod["containers"].as_array().unwrap();
        let init = pod["initContainers"].as_array().into_iter().flatten();
        for c in containers.iter().chain(init) {
            let sc = &c["securityContext"];
            let what = format!("{name} container {}", c["name"]);
            assert_eq!(c["image"], IMAGE, "{what}");
            assert_eq!(sc["runAsNonRoot"], true, "{what}");
            assert_eq!(sc["runAsUser"], NON_ROOT_UID, "{what}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{what}"
            );
            assert!(sc["capabilities"]["add"].is_null(), "{what}");
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
            assert!(!c["resources"]["requests"].is_null(), "{what}");
            assert!(!c["resources"]["limits"]["memory"].is_null(), "{what}");
        }
    }
}

#[test]
fn migration_job_runs_migrate_with_only_the_database_url() {
    let Some(objects) = manifests() else { return };
    let job = object(objects, "Job", MIGRATE);
    assert!(job["spec"]["backoffLimit"].as_i64().unwrap() > 0);
    assert!(job["spec"]["ttlSecondsAfterFinished"].as_i64().unwrap() > 0);
    let c = container(job);
    assert_eq!(c["args"], serde_json::json!(["migrate"]));
    let env = environment(objects, c);
    assert_eq!(
        env["MP_AUTH_DATABASE__URL_FILE"],
        format!("{SECRET_MOUNT_DIR}database-url")
    );
    let volumes = job["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(
        volumes[0]["secret"]["items"],
        serde_json::json!([{ "key": "database-url", "path": "database-url" }]),
        "the Job sees only the database URL"
    );
}

#[test]
fn deployments_roll_without_losing_capacity_and_are_guarded_and_autoscaled() {
    let Some(objects) = manifests() else { return };
    for name in [SERVER, GATEWAY] {
        let deployment = object(objects, "Deployment", name);
        assert_eq!(
            deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
            "{name}"
        );
        assert!(
            deployment["spec"]["replicas"].is_null(),
            "{name}: the HPA owns the replica count"
        );
        let selector = &deployment["spec"]["selector"]["matchLabels"];
        let pdb = object(objects, "PodDisruptionBudget", name);
        assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector, "{name}");
        let hpa = object(objects, "HorizontalPodAutoscaler", name);
        assert_eq!(hpa["apiVersion"], "autoscaling/v2");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], name);
        assert!(hpa["spec"]["minReplicas"].as_i64().unwrap() >= 2, "{name}");
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    }
}

#[test]
fn network_policies_admit_only_the_gateway_to_the_grpc_port() {
    let Some(objects) = manifests() else { return };
    let deny = object(objects, "NetworkPolicy", "mp-auth-default-deny");
    assert_eq!(
        deny["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "mp-auth"
    );
    assert!(deny["spec"]["ingress"].is_null() && deny["spec"]["egress"].is_null());
    let server = &object(objects, "NetworkPolicy", SERVER)["spec"];
    let grpc_rule = server["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"] == GRPC_PORT)
        .unwrap();
    assert_eq!(
        grpc_rule["from"],
        serde_json::json!([{ "podSelector": { "matchLabels": {
            "app.kubernetes.io/name": "mp-auth", "app.kubernetes.io/component": "gateway" } } }])
    );
    let http_rule = object(objects, "NetworkPolicy", GATEWAY)["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"] == 8080)
        .unwrap();
    assert_eq!(
        http_rule["from"],
        serde_json::json!([{
            "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "ingress-nginx" } },
            "podSelector": { "matchLabels": { "app.kubernetes.io/name": "ingress-nginx" } } }]),
        "only the ingress controller reaches the gateway's HTTP port (no in-cluster XFF forgery)"
    );
    let gateway_egress = object(objects, "NetworkPolicy", GATEWAY)["spec"]["egress"]
        .as_array()
        .unwrap();
    let ports: Vec<&Value> = gateway_egress
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap())
        .map(|p| &p["port"])
        .collect();
    assert!(
        ports.iter().all(|p| **p == GRPC_PORT || **p == 53),
        "the gateway talks only to the server and DNS: {ports:?}"
    );
}

/// The settings the binary would load from this environment: the same `MP_AUTH_` prefix, `__`
/// nesting and value parsing as `Settings::load`, without touching the process environment.
fn settings_from(env: &BTreeMap<String, String>) -> Settings {
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    for (key, value) in env {
        let Some(key) = key.strip_prefix("MP_AUTH_") else {
            continue;
        };
        let value: figment::value::Value = value.parse().unwrap();
        figment = figment.merge((key.to_ascii_lowercase().replace("__", "."), value));
    }
    figment
        .extract()
        .unwrap_or_else(|e| panic!("the manifests' settings do not load: {e}"))
}

#[test]
fn every_container_environment_loads_into_the_settings_the_binary_reads() {
    let Some(objects) = manifests() else { return };
    let server_env = environment(objects, container(object(objects, "Deployment", SERVER)));
    let server = settings_from(&server_env);
    server.validate_common().unwrap();
    assert_eq!(server.grpc.listen.port(), GRPC_PORT);
    assert_eq!(
        server.admin.metrics_listen.map(|a| a.port()),
        Some(SERVER_METRICS_PORT)
    );
    assert_eq!(
        server.grpc.drain_timeout_ms.to_string(),
        server_env[SERVER_DRAIN_ENV]
    );
    assert!(!server.database.migrate_on_start, "the Job migrates");
    let secret_file = |name: &str| Some(PathBuf::from(format!("{SECRET_MOUNT_DIR}{name}")));
    assert_eq!(server.database.url_file, secret_file("database-url"));
    assert_eq!(
        server.token.signing_key_file,
        secret_file("token-signing-key.pem"),
        "ES256 in production"
    );
    assert_eq!(
        server.session_keys.encryption_key_file,
        secret_file("session-key-encryption-key")
    );
    assert_eq!(server.callers_file, secret_file("callers.toml"));
    assert!(!server.apps.is_empty());
    for app in &server.apps {
        assert!(app.app_secret.is_none(), "AppSecrets come from files");
        assert_eq!(
            app.app_secret_file,
            secret_file(&format!("app-{}", app.app_id))
        );
    }

    let gateway_env = environment(objects, container(object(objects, "Deployment", GATEWAY)));
    let gateway = settings_from(&gateway_env);
    assert_eq!(gateway.gateway.listen.port(), GATEWAY_HTTP_PORT);
    assert_eq!(
        gateway.admin.metrics_listen.map(|a| a.port()),
        Some(GATEWAY_METRICS_PORT)
    );
    assert_eq!(
        gateway.gateway.backend_url,
        format!("http://{SERVER}:{GRPC_PORT}")
    );
    assert_eq!(
        gateway.gateway.drain_timeout_ms.to_string(),
        gateway_env[GATEWAY_DRAIN_ENV]
    );

    let job = settings_from(&environment(
        objects,
        container(object(objects, "Job", MIGRATE)),
    ));
    assert_eq!(job.database.url_file, secret_file("database-url"));
}

#[test]
fn secret_template_holds_only_placeholders_and_is_never_applied() {
    let text = std::fs::read_to_string(repo_path("k8s/secret.template.yaml")).unwrap();
    let docs = parse_yaml_documents(&text);
    assert_eq!(docs.len(), 1);
    let secret = &docs[0];
    assert_eq!(secret["kind"], "Secret");
    assert!(secret["data"].is_null(), "placeholders go in stringData");
    let values = secret["stringData"].as_object().unwrap();
    assert!(!values.is_empty());
    for (key, value) in values {
        assert_eq!(value, SECRET_PLACEHOLDER, "{key} must be a placeholder");
    }

    let Some(objects) = manifests() else { return };
    assert!(
        objects.iter().all(|o| o["kind"] != "Secret"),
        "kubectl apply -k must not overwrite the real Secret with placeholders"
    );
    // Every secret file the server reads is a key of the template, and the pods mount that Secret.
    let deployment = object(objects, "Deployment", SERVER);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    let env = environment(objects, container(deployment));
    let referenced: Vec<&str> = env
        .values()
        .flat_map(|v| v.split('"'))
        .filter_map(|v| v.strip_prefix(SECRET_MOUNT_DIR))
        .collect();
    assert_eq!(referenced.len(), 5, "{referenced:?}");
    for key in referenced {
        assert!(values.contains_key(key), "the Secret template lacks {key}");
    }
}

#[test]
fn manifest_ports_and_drain_are_the_binarys_defaults() {
    let defaults = mp_auth::config::Settings::default();
    assert_eq!(defaults.grpc.listen.port(), GRPC_PORT);
    assert_eq!(defaults.gateway.listen.port(), GATEWAY_HTTP_PORT);
    assert_eq!(
        defaults.grpc.drain_timeout_ms as i64,
        DEFAULT_DRAIN_TIMEOUT_MS
    );
    assert_eq!(
        defaults.gateway.drain_timeout_ms as i64,
        DEFAULT_DRAIN_TIMEOUT_MS
    );
    let backend = defaults.gateway.backend_url;
    assert!(backend.ends_with(&format!(":{GRPC_PORT}")), "{backend}");
}
