//! Published API contracts as checkers: CML 2.9's OpenAPI schemas (`tests/contracts/`) and the
//! Control Plane API's (`api/control-plane.openapi.yaml`). The test servers run every answer
//! (and the Control Plane API server every request body) through them, so they cannot drift
//! from the contract and hide a client bug.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use serde_json::Value;

pub struct Contract {
    doc: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// The CML contract, loaded once per test binary.
pub fn cml() -> &'static Contract {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    CONTRACT.get_or_init(|| Contract::load("tests/contracts/cml-2.9-openapi-subset.json"))
}

/// The Control Plane API contract, loaded once per test binary.
pub fn control_plane() -> &'static Contract {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    CONTRACT.get_or_init(|| Contract::load("api/control-plane.openapi.yaml"))
}

impl Contract {
    /// Loads an OpenAPI document (JSON or YAML) relative to the crate root.
    pub fn load(relative: &str) -> Contract {
        let path = crate::repo_root().join(relative);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let doc: Value = if relative.ends_with(".json") {
            serde_json::from_str(&text).expect("OpenAPI JSON")
        } else {
            serde_yaml_ng::from_str(&text).expect("OpenAPI YAML")
        };
        Contract {
            doc,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a request `body` to `method path` is what the spec's request body schema allows.
    pub fn check_request(&self, method: &str, path: &str, body: &Value) -> Result<(), String> {
        let key = format!("{method} {path} request");
        let validator = self.compiled(&key, |doc| {
            operation(doc, method, path)?
                .pointer("/requestBody/content/application~1json/schema")
                .cloned()
                .ok_or_else(|| format!("{method} {path} takes no JSON body"))
        })?;
        errors(&validator, body)
            .map_err(|e| format!("{method} {path} request breaks the contract: {e}; body {body}"))
    }

    /// Whether `body`, answered with `status` to `method path` (a path as the spec names it,
    /// e.g. `/system_stats`), is what the spec allows. The status itself must be one the spec
    /// lists for the operation, or fall under its `default` response.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
        let validator = self.validator(method, path, status)?;
        errors(&validator, body).map_err(|e| {
            format!("{method} {path} -> {status} breaks the contract: {e}; body {body}")
        })
    }

    fn validator(
        &self,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        let key = format!("{method} {path} {status}");
        self.compiled(&key, |doc| {
            let responses = &operation(doc, method, path)?["responses"];
            let response = responses
                .get(status.to_string())
                .or_else(|| (!(200..300).contains(&status)).then(|| &responses["default"]))
                .filter(|r| !r.is_null())
                .ok_or_else(|| format!("{method} {path} never answers {status}"))?;
            let body = |r: &Value| {
                resolve(doc, r)
                    .pointer("/content/application~1json/schema")
                    .cloned()
            };
            let nothing = serde_json::json!({"type": "null"});
            Ok(match body(response) {
                Some(schema) => schema,
                // An error the spec lists without a body (e.g. 400 of `DELETE
                // /licensing/deregistration`): CML's error handler still answers its error body,
                // the one its `default` response describes, whose `description` tells the cases
                // apart ("already deregistered", "nodes are running"). Either is allowed.
                None if !(200..300).contains(&status) => match body(&responses["default"]) {
                    Some(error) => serde_json::json!({"anyOf": [nothing, error]}),
                    None => nothing,
                },
                // A success without a body: only an empty answer conforms.
                None => nothing,
            })
        })
    }

    fn compiled(
        &self,
        key: &str,
        schema_of: impl FnOnce(&Value) -> Result<Value, String>,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        if let Some(v) = self.validators.lock().expect("test server state").get(key) {
            return Ok(v.clone());
        }
        let mut schema = schema_of(&self.doc)?;
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
        schema["components"] = self.doc["components"].clone();
        close_keyed_maps(&mut schema);
        let validator = Arc::new(
            jsonschema::draft202012::new(&schema)
                .map_err(|e| format!("schema of {key} does not compile: {e}"))?,
        );
        self.validators
            .lock()
            .expect("validators")
            .insert(key.to_owned(), validator.clone());
        Ok(validator)
    }
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> Result<&'a Value, String> {
    doc.pointer(&format!(
        "/paths/{}/{method}",
        path.replace('~', "~0").replace('/', "~1")
    ))
    .ok_or_else(|| format!("{method} {path} is not in the contract"))
}

/// Follows a `$ref` to a shared response (`#/components/responses/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap_or(v),
        None => v,
    }
}

fn errors(validator: &jsonschema::Validator, body: &Value) -> Result<(), String> {
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The schemas type maps keyed by compute id as `patternProperties` (UUID4) with `propertyNames`
/// that only describe the key: read literally, a key matching no pattern (`compute-1`) would
/// escape validation altogether. Read as CML means it, such a key is a breach.
fn close_keyed_maps(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("patternProperties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_keyed_maps);
        }
        Value::Array(items) => items.iter_mut().for_each(close_keyed_maps),
        _ => {}
    }
}
