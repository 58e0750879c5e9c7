use super::*;

fn parse_str(text: &str) -> Result<App, ConfigError> {
    parse(Path::new("/app/spin.toml"), text)
}

const HEAD: &str = "spin_manifest_version = 2\n[application]\nname = \"t\"\n";

#[test]
fn minimal_app_normalises_ids() {
    let app = parse_str(&format!(
        "{HEAD}[[trigger.http]]\nroute = \"/...\"\ncomponent = \"web\"\n[[trigger.http]]\nroute = \"/inline\"\ncomponent = {{ source = \"i.wasm\" }}\n[[trigger.http]]\nroute = \"/static\"\nstatic_response = {{ status_code = 201, body = \"hi\" }}\n[component.web]\nsource = \"web.wasm\"\n"
    ))
    .unwrap();
    assert_eq!(app.http_triggers[0].id, "web-http-trigger");
    assert_eq!(app.http_triggers[1].id, "http-trigger1");
    assert!(matches!(&app.http_triggers[1].target, TriggerTarget::Component(c) if c == "http-trigger1-component"));
    assert!(matches!(&app.http_triggers[2].target, TriggerTarget::Static(s) if s.status_code == Some(201)));
    assert_eq!(app.components["web"].source, PathBuf::from("/app/web.wasm"));
}

#[test]
fn unknown_key_names_file_key_and_line() {
    let e = parse_str(&format!("{HEAD}[component.web]\nsource = \"w.wasm\"\nsourcez = 1\n")).unwrap_err();
    assert_eq!(e.line(), Some(6), "{e}");
    assert!(e.to_string().contains("/app/spin.toml:6"), "{e}");
    assert!(e.to_string().contains("sourcez"), "{e}");
}

#[test]
fn semantic_errors_are_located() {
    let e = parse_str(&format!("{HEAD}[[trigger.http]]\nroute = \"/\"\ncomponent = \"nope\"\n")).unwrap_err();
    assert_eq!(e.key, "trigger.http[0].component");
    assert_eq!(e.line(), Some(6), "{e}");
    let e = parse_str(&format!("{HEAD}[variables]\nx = {{ required = true, default = \"a\" }}\n")).unwrap_err();
    assert_eq!(e.key, "variables.x");
    assert_eq!(e.line(), Some(5));
    let e = parse_str(&format!("{HEAD}[variables]\nBad = {{ default = \"a\" }}\n")).unwrap_err();
    assert!(e.message.contains("invalid variable name"));
    let e = parse_str(&format!("{HEAD}[component.Web_x]\nsource = \"w.wasm\"\n")).unwrap_err();
    assert!(e.message.contains("invalid component id"), "{e}");
    let e = parse_str(&format!("{HEAD}[component.w]\nsource = \"w.wasm\"\nallowed_outbound_hosts = [\"example.com\"]\n")).unwrap_err();
    assert_eq!(e.key, "component.w.allowed_outbound_hosts[0]");
    assert_eq!(e.line(), Some(6));
    let e =
        parse_str(&format!("{HEAD}[component.w]\nsource = \"w.wasm\"\n[component.w.variables]\nv = \"{{{{ missing }}}}\"\n")).unwrap_err();
    assert!(e.message.contains("missing"), "{e}");
}

#[test]
fn version_and_unsupported_features() {
    let e = parse_str("spin_manifest_version = \"1\"\n[application]\nname = \"t\"\n").unwrap_err();
    assert!(e.message.contains("unsupported manifest version"));
    assert_eq!(e.line(), Some(1));
    let e = parse_str(&format!("{HEAD}[application.trigger.http]\nbase = \"/api\"\n")).unwrap_err();
    assert!(e.message.contains("base"), "{e}");
    let e = parse_str(&format!("{HEAD}[[trigger.redis]]\nchannel = \"x\"\ncomponent = \"c\"\n")).unwrap_err();
    assert!(e.to_string().contains("redis"), "{e}");
    let e = parse_str(&format!(
        "{HEAD}[[trigger.http]]\nroute = {{ private = false }}\ncomponent = \"c\"\n[component.c]\nsource = \"c.wasm\"\n"
    ))
    .unwrap_err();
    assert!(e.message.contains("private"), "{e}");
    let e = parse_str(&format!("{HEAD}[component.c]\nsource = {{ url = \"https://x\", digest = \"sha256:0\" }}\n")).unwrap_err();
    assert!(e.message.contains("remote"), "{e}");
}

#[test]
fn ids_follow_spin_rules() {
    assert!(check_kebab("todo-api").is_ok());
    assert!(check_kebab("TODO-API").is_ok());
    assert!(check_kebab("todo_api").is_err());
    assert!(check_kebab("1todo").is_err());
    assert!(check_kebab("todo--api").is_err());
    assert!(check_lower_snake("dapr_url").is_ok());
    assert!(check_lower_snake("DAPR_URL").is_err());
    assert!(check_lower_snake("dapr-url").is_err());
}
