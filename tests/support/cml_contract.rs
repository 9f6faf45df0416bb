//! The published CML 2.9 OpenAPI schemas (`tests/contracts/`), as a checker of answers: the CML
//! test server runs every answer it gives through it, so it cannot drift from the real API.

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
    CONTRACT.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/contracts/cml-2.9-openapi-subset.json"
        );
        let text = std::fs::read_to_string(path).expect("read the CML OpenAPI subset");
        Contract {
            doc: serde_json::from_str(&text).expect("the CML OpenAPI subset is JSON"),
            validators: Mutex::new(HashMap::new()),
        }
    })
}

impl Contract {
    /// Whether `body`, answered with `status` to `method path` (a path as the spec names it,
    /// e.g. `/system_stats`), is what the spec allows. The status itself must be one the spec
    /// lists for the operation, or fall under its `default` response.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
        let validator = self.validator(method, path, status)?;
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{method} {path} -> {status} breaks the contract: {}; body {body}",
                errors.join("; ")
            ))
        }
    }

    fn validator(
        &self,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        let key = format!("{method} {path} {status}");
        if let Some(v) = self.validators.lock().unwrap().get(&key) {
            return Ok(v.clone());
        }
        let operation = self
            .doc
            .pointer(&format!("/paths/{}/{method}", path.replace('/', "~1")))
            .ok_or_else(|| format!("{method} {path} is not in the contract"))?;
        let responses = &operation["responses"];
        let response = responses
            .get(status.to_string())
            .or_else(|| (!(200..300).contains(&status)).then(|| &responses["default"]))
            .filter(|r| !r.is_null())
            .ok_or_else(|| format!("{method} {path} never answers {status}"))?;
        let mut schema = response
            .pointer("/content/application~1json/schema")
            .cloned()
            .ok_or_else(|| format!("{method} {path} {status} has no JSON body"))?;
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
        schema["components"] = self.doc["components"].clone();
        close_keyed_maps(&mut schema);
        let validator = Arc::new(
            jsonschema::draft202012::new(&schema)
                .map_err(|e| format!("schema of {key} does not compile: {e}"))?,
        );
        self.validators
            .lock()
            .unwrap()
            .insert(key, validator.clone());
        Ok(validator)
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
