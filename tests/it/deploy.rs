//! The deployment files cannot drift silently: docker-compose.yml, the Dockerfile and the
//! Kubernetes manifests are checked against the bootstraps in envoy/, the CLI, the Envoy version
//! the tests use, and each other. (No Docker engine runs here; this is what can be checked.)

use std::collections::BTreeSet;

use ai_extproc::cli::Cli;
use ai_extproc::config::{self, CompileOptions};
use ai_extproc::envoy::{
    render_yaml, BackendOverride, Credentials, EnvoyOptions, ProcessorAddress,
};
use clap::Parser;
use serde_yaml::Value;

use crate::harness::root;

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&read(path)).unwrap()
}

fn docs(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `ai-extproc <args>` must parse with the real CLI.
fn parses(args: &[String]) {
    let mut argv = vec!["ai-extproc".to_string()];
    argv.extend(args.iter().cloned());
    if let Err(e) = Cli::try_parse_from(&argv) {
        panic!("{argv:?} does not parse: {e}");
    }
}

fn makefile_envoy_version() -> String {
    read("Makefile")
        .lines()
        .find_map(|l| {
            l.strip_prefix("ENVOY_VERSION := ")
                .map(str::trim)
                .map(str::to_string)
        })
        .expect("ENVOY_VERSION in the Makefile")
}

fn compose_options(fake: bool) -> EnvoyOptions {
    let mut overrides = vec![BackendOverride {
        backend: "envoy-ai-gateway-basic-testupstream".into(),
        address: Some("testupstream:8080".parse().unwrap()),
        ca_file: None,
    }];
    if fake {
        overrides.push(BackendOverride {
            backend: "envoy-ai-gateway-fireworks".into(),
            address: Some("fake-fireworks:8443".parse().unwrap()),
            ca_file: Some("/certs/fake-fireworks-ca.pem".into()),
        });
    }
    EnvoyOptions {
        listen: "0.0.0.0:8080".parse().unwrap(),
        admin: "127.0.0.1:9901".parse().unwrap(),
        processor: ProcessorAddress::Tcp {
            host: "ai-extproc".into(),
            port: 50051,
        },
        system_ca_file: "/etc/ssl/certs/ca-certificates.crt".into(),
        overrides,
        credentials: Credentials::EnvoyEnv,
        ..EnvoyOptions::default()
    }
}

#[test]
fn compose_bootstraps_match_the_renderer_and_envoy_accepts_them() {
    let config = crate::envoy_config::examples_config();
    for (file, fake) in [
        ("envoy/compose-offline.yaml", true),
        ("envoy/compose-live.yaml", false),
    ] {
        let rendered = render_yaml(&config, &compose_options(fake));
        assert!(
            read(file) == rendered,
            "{file} drifted: run `make envoy-config` and commit"
        );
        // Validate with the real Envoy, the container-only CA path pointed at a real file.
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            ai_extproc::upstreams::TestCa::generate(&["x"])
                .unwrap()
                .ca_pem,
        )
        .unwrap();
        let local = rendered.replace("/certs/fake-fireworks-ca.pem", &ca.display().to_string());
        crate::envoy_config::validate(&local);
    }
}

#[test]
fn docker_compose_agrees_with_envoy_the_cli_and_the_dockerfile() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    let names: BTreeSet<&str> = services
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(|k| k.as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["ai-extproc", "envoy", "fake-fireworks", "testupstream"])
    );
    // Whatever dies is restarted, Envoy included.
    for name in &names {
        assert_eq!(
            services[*name]["restart"].as_str(),
            Some("unless-stopped"),
            "{name} has no restart policy"
        );
    }

    // Envoy: the official image at the version the tests run, a bootstrap from envoy/.
    let envoy = &services["envoy"];
    assert_eq!(
        envoy["image"].as_str(),
        Some(format!("envoyproxy/envoy:v{}", makefile_envoy_version()).as_str())
    );
    let cmd = strings(&envoy["command"]);
    let c = cmd.iter().position(|a| a == "-c").expect("-c");
    let bootstrap = &cmd[c + 1];
    assert_eq!(bootstrap, "/etc/envoy/compose-${ENVOY_MODE:-offline}.yaml");
    let envoy_volumes = strings(&envoy["volumes"]);
    assert!(envoy_volumes.contains(&"./envoy:/etc/envoy:ro".to_string()));
    assert!(envoy_volumes.contains(&"certs:/certs:ro".to_string()));
    for mode in ["offline", "live"] {
        assert!(root().join(format!("envoy/compose-{mode}.yaml")).exists());
    }
    assert_eq!(strings(&envoy["ports"]), ["8080:8080"]);
    let offline: Value = yaml("envoy/compose-offline.yaml");
    let listener = &offline["static_resources"]["listeners"][0]["address"]["socket_address"];
    assert_eq!(listener["port_value"].as_u64(), Some(8080));
    // Envoy's admin (config dump, quitquitquit) stays on the container's loopback.
    for mode in ["offline", "live"] {
        let admin = &yaml(&format!("envoy/compose-{mode}.yaml"))["admin"]["address"]
            ["socket_address"]["address"];
        assert_eq!(admin.as_str(), Some("127.0.0.1"), "{mode}");
    }
    for dep in ["ai-extproc", "testupstream", "fake-fireworks"] {
        assert_eq!(
            envoy["depends_on"][dep]["condition"].as_str(),
            Some("service_healthy"),
            "{dep}"
        );
    }

    // Every ai-extproc service's command parses with the real CLI and listens where the
    // bootstrap sends traffic.
    let clusters = offline["static_resources"]["clusters"]
        .as_sequence()
        .unwrap();
    let endpoint = |name: &str| {
        let c = clusters
            .iter()
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("cluster {name}"));
        let a = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"];
        format!(
            "{}:{}",
            a["address"].as_str().unwrap(),
            a["port_value"].as_u64().unwrap()
        )
    };
    for (service, cluster, listen_flag) in [
        ("ai-extproc", "ai_extproc", "0.0.0.0:50051"),
        (
            "testupstream",
            "default/envoy-ai-gateway-basic-testupstream",
            "0.0.0.0:8080",
        ),
        (
            "fake-fireworks",
            "default/envoy-ai-gateway-fireworks",
            "0.0.0.0:8443",
        ),
    ] {
        let svc = &services[service];
        assert_eq!(svc["image"].as_str(), Some("ai-extproc:local"));
        let args = strings(&svc["command"]);
        parses(&args);
        let listen = args
            .iter()
            .position(|a| a == "--listen")
            .map(|i| args[i + 1].clone());
        assert_eq!(listen.as_deref(), Some(listen_flag), "{service}");
        let port = listen_flag.rsplit(':').next().unwrap();
        assert_eq!(
            endpoint(cluster),
            format!("{service}:{port}"),
            "Envoy reaches {service}"
        );
        let check = strings(&svc["healthcheck"]["test"]);
        assert_eq!(&check[..3], ["CMD", "ai-extproc", "healthcheck"]);
        parses(&check[2..]);
    }

    // The config the processor reads is the examples, mounted where its command points.
    let ai = &services["ai-extproc"];
    assert_eq!(strings(&ai["volumes"]), ["./examples:/etc/ai-extproc:ro"]);
    for file in strings(&ai["command"])
        .iter()
        .filter(|a| a.starts_with("/etc/ai-extproc/"))
    {
        let local = root()
            .join("examples")
            .join(file.trim_start_matches("/etc/ai-extproc/"));
        assert!(local.exists(), "{file} is not in examples/");
    }
    assert!(ai["environment"]["FIREWORKS_API_KEY"]
        .as_str()
        .unwrap()
        .starts_with("${FIREWORKS_API_KEY"));
    // Envoy injects the key (the compose bootstraps carry the injector), so the processor must
    // not, and Envoy's container has the variable the bootstraps read.
    assert!(strings(&ai["command"])
        .windows(2)
        .any(|w| w == ["--credentials", "envoy"]));
    for mode in ["offline", "live"] {
        assert!(
            read(&format!("envoy/compose-{mode}.yaml"))
                .contains("environment_variable: FIREWORKS_API_KEY"),
            "{mode}"
        );
    }
    assert_eq!(
        envoy["environment"]["FIREWORKS_API_KEY"].as_str(),
        Some("${FIREWORKS_API_KEY:-fw_YOUR_FIREWORKS_API_KEY_HERE}"),
        "offline, the key the fake expects"
    );
    // The admin address the health check probes is the one the command serves.
    assert!(strings(&ai["command"])
        .windows(2)
        .any(|w| w == ["--admin", "0.0.0.0:9091"]));

    // The fake writes its CA where the offline bootstrap reads it, on the shared volume.
    let fake_args = strings(&services["fake-fireworks"]["command"]);
    let ca = &fake_args[fake_args.iter().position(|a| a == "--ca-out").unwrap() + 1];
    assert!(read("envoy/compose-offline.yaml").contains(&format!("filename: {ca}")));
    assert!(strings(&services["fake-fireworks"]["volumes"]).contains(&"certs:/certs".to_string()));
    assert!(compose["volumes"]["certs"].is_mapping());

    // The Dockerfile builds the binary these commands run, as a non-root user.
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("FROM debian:bookworm-slim"));
    assert!(dockerfile.contains("USER 10001"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["ai-extproc"]"#));
    assert!(dockerfile.contains("EXPOSE 50051 9091"));
    let hc = dockerfile
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("HEALTHCHECK");
    assert!(hc.contains(r#"["ai-extproc", "healthcheck", "http://127.0.0.1:9091/readyz"]"#));
    let cmd_line = dockerfile
        .lines()
        .find(|l| l.starts_with("CMD "))
        .expect("CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd_line.trim_start_matches("CMD ")).unwrap();
    parses(&cmd);
    for copied in dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
    {
        for src in copied.split_whitespace().rev().skip(1) {
            assert!(root().join(src).exists(), "Dockerfile copies missing {src}");
        }
    }
}

#[test]
fn kubernetes_manifests_reference_each_other_consistently() {
    let objects = crate::envoy_gateway::manifests();
    let find = |kind: &str, name: &str| crate::envoy_gateway::find(&objects, kind, name);
    let of_kind = |kind: &'static str| {
        objects
            .iter()
            .filter(move |o| o["kind"].as_str() == Some(kind))
    };
    // The Gateway is the guide's (the same names as Envoy AI Gateway's basic.yaml).
    let gateway = docs("examples/basic.yaml")
        .into_iter()
        .find(|o| o["kind"].as_str() == Some("Gateway"))
        .unwrap();
    let gateway_name = gateway["metadata"]["name"].as_str().unwrap();
    let shipped = find("Gateway", gateway_name);
    assert_eq!(shipped["spec"], gateway["spec"]);

    // One ClientTrafficPolicy on the Gateway (Envoy Gateway ignores a second one, Conflicted),
    // named as the guide's basic.yaml names its own, so applying both updates one object; its
    // buffer is the processor's body limit too.
    let ctps: Vec<&Value> = of_kind("ClientTrafficPolicy").collect();
    assert_eq!(ctps.len(), 1, "one ClientTrafficPolicy per Gateway");
    assert_eq!(
        ctps[0]["metadata"]["name"].as_str(),
        Some("client-buffer-limit")
    );
    assert_eq!(
        ctps[0]["spec"]["targetRefs"][0]["name"].as_str(),
        Some(gateway_name)
    );
    let buffer = crate::envoy_gateway::quantity(&ctps[0]["spec"]["connection"]["bufferLimit"]);
    assert!(
        buffer >= 20 << 20,
        "vision bodies need more than {buffer} bytes"
    );

    // Policies attach to the guide's Gateway.
    let eep = find("EnvoyExtensionPolicy", "ai-extproc");
    assert_eq!(
        eep["spec"]["targetRefs"][0]["name"].as_str(),
        Some(gateway_name)
    );
    let ext = &eep["spec"]["extProc"][0];
    assert_eq!(
        ext["processingMode"]["allowModeOverride"].as_bool(),
        Some(true)
    );
    assert_eq!(
        ext["processingMode"]["request"]["body"].as_str(),
        Some("Buffered")
    );
    assert_eq!(ext["failOpen"].as_bool(), Some(false));
    assert_eq!(
        strings(&ext["metadata"]["writableNamespaces"]),
        ["io.envoy.ai_gateway"]
    );
    // HTTP/2 windows that carry multi-MB bodies within the message timeout.
    let http2 = &ext["backendSettings"]["http2"];
    assert!(crate::envoy_gateway::quantity(&http2["initialStreamWindowSize"]) >= 4 << 20);
    assert!(crate::envoy_gateway::quantity(&http2["initialConnectionWindowSize"]) >= 16 << 20);

    // EnvoyExtensionPolicy -> Service port -> container port -> the port the process listens on.
    let backend = &ext["backendRefs"][0];
    let service = find("Service", backend["name"].as_str().unwrap());
    let port = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["port"] == backend["port"])
        .expect("the policy's port is on the Service");
    assert_eq!(
        port["appProtocol"].as_str(),
        Some("kubernetes.io/h2c"),
        "ext_proc is HTTP/2"
    );
    let deployment = find("Deployment", "ai-extproc");
    let pod = &deployment["spec"]["template"];
    for (k, v) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&pod["metadata"]["labels"][k], v, "Service selects the pods");
    }
    let container = &pod["spec"]["containers"][0];
    let container_port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .expect("targetPort names a container port");
    let args = strings(&container["args"]);
    parses(&args);
    let listen = &args[args.iter().position(|a| a == "--listen").unwrap() + 1];
    assert_eq!(
        listen.rsplit(':').next().unwrap(),
        container_port["containerPort"]
            .as_u64()
            .unwrap()
            .to_string()
    );
    let admin = &args[args.iter().position(|a| a == "--admin").unwrap() + 1];
    let admin_port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some("admin"))
        .unwrap();
    assert_eq!(
        admin.rsplit(':').next().unwrap(),
        admin_port["containerPort"].as_u64().unwrap().to_string()
    );
    // The probes reach the admin endpoint: readiness (config loaded, not draining) and
    // liveness (the process answers; a processor whose gRPC server dies exits instead).
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(
            container[probe]["httpGet"]["path"].as_str(),
            Some(path),
            "{probe}"
        );
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some("admin"),
            "{probe}"
        );
    }

    // The key comes from the guide's Secret into the variable --secret-env names.
    let env = &container["env"][0];
    let secret_env = &args[args.iter().position(|a| a == "--secret-env").unwrap() + 1];
    assert_eq!(
        secret_env,
        &format!(
            "envoy-ai-gateway-fireworks-apikey={}",
            env["name"].as_str().unwrap()
        )
    );
    assert_eq!(
        env["valueFrom"]["secretKeyRef"]["name"].as_str(),
        Some("envoy-ai-gateway-fireworks-apikey")
    );
    assert_eq!(
        env["valueFrom"]["secretKeyRef"]["key"].as_str(),
        Some("apiKey")
    );

    // The ConfigMap holds the guide's config, mounted where the args point; it compiles.
    let cm = find("ConfigMap", "ai-extproc-config");
    let text = cm["data"]["fireworks.yaml"].as_str().unwrap();
    assert_eq!(text, read("examples/fireworks.yaml"));
    let mount = &container["volumeMounts"][0];
    assert_eq!(mount["mountPath"].as_str(), Some(args[1].as_str()));
    let compiled = config::load_str("configmap", text, &CompileOptions::default()).unwrap();

    // The processor takes decoded bodies up to the Gateway's buffer.
    let max_body = &args[args.iter().position(|a| a == "--max-body-bytes").unwrap() + 1];
    assert_eq!(max_body.parse::<u64>().unwrap(), buffer);

    // The HTTPRoute has a rule for every model the config routes, to a Backend that exists, and
    // last a catch-all whose direct response (an HTTPRouteFilter that exists) is OpenAI JSON.
    let route = find("HTTPRoute", "ai-extproc-fireworks");
    assert_eq!(
        route["spec"]["parentRefs"][0]["name"].as_str(),
        Some(gateway_name)
    );
    let rules = route["spec"]["rules"].as_sequence().unwrap();
    let (catch_all, model_rules) = rules.split_last().unwrap();
    assert_eq!(catch_all["matches"][0]["path"]["value"].as_str(), Some("/"));
    let reference = &catch_all["filters"][0]["extensionRef"];
    let filter = find(
        reference["kind"].as_str().unwrap(),
        reference["name"].as_str().unwrap(),
    );
    let direct = &filter["spec"]["directResponse"];
    assert_eq!(direct["statusCode"].as_u64(), Some(404));
    assert_eq!(direct["contentType"].as_str(), Some("application/json"));
    let body: serde_json::Value =
        serde_json::from_str(direct["body"]["inline"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let mut models = Vec::new();
    for rule in model_rules {
        let header = &rule["matches"][0]["headers"][0];
        assert_eq!(header["name"].as_str(), Some("x-ai-eg-model"));
        models.push(header["value"].as_str().unwrap().to_string());
        let b = &rule["backendRefs"][0];
        find(b["kind"].as_str().unwrap(), b["name"].as_str().unwrap());
        // The routing headers do not reach the provider.
        let removed: Vec<String> = rule["filters"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|f| f["type"].as_str() == Some("RequestHeaderModifier"))
            .flat_map(|f| strings(&f["requestHeaderModifier"]["remove"]))
            .collect();
        assert!(removed.contains(&"x-ai-eg-model".to_string()), "{rule:?}");
    }
    let configured: Vec<String> = compiled.models.iter().map(|m| m.id.clone()).collect();
    assert_eq!(models, configured);
    let tls = find("BackendTLSPolicy", "envoy-ai-gateway-fireworks-tls");
    assert_eq!(
        tls["apiVersion"].as_str(),
        Some("gateway.networking.k8s.io/v1"),
        "v1alpha3 is not served by the standard-channel CRDs"
    );
    assert_eq!(
        tls["spec"]["targetRefs"][0]["name"].as_str(),
        Some("envoy-ai-gateway-fireworks")
    );
    assert_eq!(
        find("BackendTrafficPolicy", "ai-extproc-timeouts")["spec"]["targetRefs"][0]["name"]
            .as_str(),
        Some("ai-extproc-fireworks")
    );
}

#[test]
fn envoy_gateway_values_need_no_ai_gateway_controller() {
    let values = yaml("deploy/envoy-gateway-values.yaml");
    let eg = &values["config"]["envoyGateway"];
    assert_eq!(eg["extensionApis"]["enableBackend"].as_bool(), Some(true));
    assert!(
        eg["extensionManager"].is_null(),
        "an extension manager pointing at a missing controller stops Envoy Gateway's updates"
    );
    // The README's Kubernetes steps are the ones the tests exercise.
    let readme = read("README.md");
    for step in [
        "-f deploy/envoy-gateway-values.yaml",
        "kubectl apply -f deploy/kubernetes/",
    ] {
        assert!(readme.contains(step), "README lacks {step:?}");
    }
}
