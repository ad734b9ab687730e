//! Request bodies checked against their types before they are read.
//!
//! What a body must hold is declared once, on its type in `flinger_api`: required fields, each
//! field's type and bounds (`#[schema(min_length = …, minimum = …)]`). That `ToSchema` derive is
//! also what the OpenAPI document shows, so the document says exactly what is enforced. [`body`]
//! validates the JSON against that schema (JSON Schema 2020-12), names every bad field at once
//! in Testflinger's words (marshmallow's messages) as a 422, and only then deserializes.
//!
//! What a schema cannot say (a phase name, a datetime written Testflinger's way, two fields that
//! exclude each other) stays with the handler, on the typed value.

use crate::error::ApiError;
use boon::{Compiler, ErrorKind, SchemaIndex, Schemas, Type, Types, ValidationError};
use broker_schema::ValidationErrors;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::any::TypeId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use utoipa::ToSchema;

/// Reads a JSON object body of type `T`: 400 when it is not JSON, 422 naming every field that
/// does not match `T`'s schema (`_schema` when the body is not an object).
pub fn body<T: ToSchema + DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("Malformed JSON: {e}")))?;
    match value {
        Value::Object(m) => object(m),
        _ => Err(ApiError::invalid_field("_schema", "Invalid input type.")),
    }
}

/// [`body`], with the checks a schema cannot state (`more` adds their errors, looking at the
/// body as sent), reported together with the schema's.
pub fn body_checked<T: ToSchema + DeserializeOwned + 'static>(
    bytes: &[u8],
    more: impl FnOnce(&Value, &mut ValidationErrors),
) -> Result<T, ApiError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("Malformed JSON: {e}")))?;
    match value {
        Value::Object(m) => object_checked(m, more),
        _ => Err(ApiError::invalid_field("_schema", "Invalid input type.")),
    }
}

/// [`body_checked`], for a body already read as a JSON object.
pub fn object_checked<T: ToSchema + DeserializeOwned + 'static>(
    m: Map<String, Value>,
    more: impl FnOnce(&Value, &mut ValidationErrors),
) -> Result<T, ApiError> {
    let value = Value::Object(m);
    let mut errors = check::<T>(&value);
    more(&value, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid_field("_schema", e.to_string()))
}

/// The same, for a body already read as a JSON object.
pub fn object<T: ToSchema + DeserializeOwned + 'static>(m: Map<String, Value>) -> Result<T, ApiError> {
    let value = Value::Object(m);
    let errors = check::<T>(&value);
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid_field("_schema", e.to_string()))
}

/// Every field of `value` that does not match `T`'s schema, with its message.
pub fn check<T: ToSchema + 'static>(value: &Value) -> ValidationErrors {
    let compiled = compiled::<T>();
    let mut errors = ValidationErrors::default();
    if let Err(e) = compiled.schemas.validate(value, compiled.index) {
        collect(&e, &mut errors);
    }
    errors
}

/// A body type's schema, compiled once per thread (a compiled schema is not `Send`).
struct Compiled {
    schemas: Schemas,
    index: SchemaIndex,
}

fn compiled<T: ToSchema + 'static>() -> Rc<Compiled> {
    thread_local! {
        static CACHE: RefCell<HashMap<TypeId, Rc<Compiled>>> = RefCell::new(HashMap::new());
    }
    CACHE.with(|cache| {
        cache
            .borrow_mut()
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Rc::new(compile::<T>()))
            .clone()
    })
}

/// One schema document: `T`'s schema with the schemas it refers to as its `$defs`.
fn compile<T: ToSchema>() -> Compiled {
    let mut referenced = vec![];
    T::schemas(&mut referenced);
    let defs: Map<String, Value> = referenced
        .into_iter()
        .map(|(name, s)| (name, serde_json::to_value(s).expect("a schema serializes")))
        .collect();
    let mut root = serde_json::to_value(T::schema()).expect("a schema serializes");
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["$defs"] = Value::Object(defs);
    let root: Value =
        serde_json::from_str(&root.to_string().replace("#/components/schemas/", "#/$defs/")).expect("JSON");
    let url = format!("http://flinger.invalid/{}.json", T::name());
    let mut schemas = Schemas::new();
    let mut compiler = Compiler::new();
    compiler.add_resource(&url, root).expect("a schema resource");
    let index = compiler
        .compile(&url, &mut schemas)
        .unwrap_or_else(|e| panic!("the schema of {} does not compile: {e:#}", T::name()));
    Compiled { schemas, index }
}

/// Adds the leaves of a validation error tree, each under its field's dotted path.
fn collect(e: &ValidationError, errors: &mut ValidationErrors) {
    if !e.causes.is_empty() {
        for cause in &e.causes {
            collect(cause, errors);
        }
        return;
    }
    let at: Vec<String> = e
        .instance_location
        .tokens
        .iter()
        .map(|t| match t {
            boon::InstanceToken::Prop(p) => p.to_string(),
            boon::InstanceToken::Item(i) => i.to_string(),
        })
        .collect();
    let field = |name: Option<&str>| {
        let mut path = at.clone();
        path.extend(name.map(str::to_owned));
        if path.is_empty() {
            "_schema".to_owned()
        } else {
            path.join(".")
        }
    };
    match &e.kind {
        ErrorKind::Required { want } => {
            for name in want {
                errors.add(field(Some(name)), "Missing data for required field.");
            }
        }
        ErrorKind::AdditionalProperties { got } => {
            for name in got {
                errors.add(field(Some(name)), "Unknown field.");
            }
        }
        ErrorKind::Type { want, .. } => {
            // The `null` branch of an optional field is not what the caller meant.
            if want.iter().any(|t| t != Type::Null) {
                errors.add(field(None), type_message(want));
            }
        }
        ErrorKind::MinLength { want, .. } => {
            errors.add(field(None), format!("Shorter than minimum length {want}."))
        }
        ErrorKind::MaxLength { want, .. } => {
            errors.add(field(None), format!("Longer than maximum length {want}."))
        }
        ErrorKind::Minimum { want, .. } => {
            errors.add(field(None), format!("Must be greater than or equal to {want}."))
        }
        ErrorKind::Maximum { want, .. } => {
            errors.add(field(None), format!("Must be less than or equal to {want}."))
        }
        ErrorKind::Enum { want } => errors.add(
            field(None),
            format!(
                "Must be one of: {}.",
                want.iter().map(plain).collect::<Vec<_>>().join(", ")
            ),
        ),
        ErrorKind::Const { want } => errors.add(field(None), format!("Must be one of: {}.", plain(want))),
        other => errors.add(field(None), other.to_string()),
    }
}

/// Marshmallow's words for a value of the wrong type.
fn type_message(want: &Types) -> &'static str {
    if want.contains(Type::String) {
        "Not a valid string."
    } else if want.contains(Type::Integer) {
        "Not a valid integer."
    } else if want.contains(Type::Number) {
        "Not a valid number."
    } else if want.contains(Type::Boolean) {
        "Not a valid boolean."
    } else if want.contains(Type::Array) {
        "Not a valid list."
    } else {
        "Not a valid mapping type."
    }
}

fn plain(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flinger_api::{LogFragment, SecretIn};

    fn fields(e: ApiError) -> std::collections::BTreeMap<String, Vec<String>> {
        match e {
            ApiError::Validation { errors, .. } => errors.fields,
            other => panic!("not a validation error: {other}"),
        }
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let e = body::<LogFragment>(br#"{"fragment_number": -1, "phase": 3}"#).unwrap_err();
        let f = fields(e);
        assert_eq!(f["fragment_number"], ["Must be greater than or equal to 0."]);
        assert_eq!(f["phase"], ["Not a valid string."]);
        assert_eq!(f["timestamp"], ["Missing data for required field."]);
        assert_eq!(f["log_data"], ["Missing data for required field."]);
    }

    #[test]
    fn bounds_declared_on_the_type_are_enforced() {
        let f = fields(body::<SecretIn>(br#"{"value": "", "expire_after": 0}"#).unwrap_err());
        assert_eq!(f["value"], ["Shorter than minimum length 1."]);
        assert_eq!(f["expire_after"], ["Must be greater than or equal to 1."]);
        let ok = body::<SecretIn>(br#"{"value": "v", "ephemeral": true}"#).unwrap();
        assert_eq!(ok.ephemeral, Some(true));
    }

    #[test]
    fn an_unknown_action_names_the_ones_there_are() {
        use flinger_api::{Action, ActionKind};
        let ok = body::<Action>(br#"{"action": "cancel"}"#).unwrap();
        assert_eq!(ok.action, ActionKind::Cancel);
        let f = fields(body::<Action>(br#"{"action": "explode"}"#).unwrap_err());
        assert_eq!(f["action"], ["Must be one of: cancel."]);
        let f = fields(body::<Action>(b"{}").unwrap_err());
        assert_eq!(f["action"], ["Missing data for required field."]);
    }

    #[test]
    fn agents_posts_are_checked_against_their_declared_shapes() {
        use flinger_api::{ImagesIn, QueuesIn, ResultPost, StatusUpdate};
        let f = fields(
            body::<StatusUpdate>(br#"{"events": [{"event_name": "x"}, 3], "agent_id": 1}"#).unwrap_err(),
        );
        assert_eq!(f["job_status_webhook"], ["Missing data for required field."]);
        assert_eq!(f["events.0.timestamp"], ["Missing data for required field."]);
        assert_eq!(f["events.1"], ["Not a valid mapping type."]);
        assert_eq!(f["agent_id"], ["Not a valid string."]);
        let f = fields(
            body::<ResultPost>(br#"{"status": {"test": "0"}, "device_info": [], "extra": 1}"#).unwrap_err(),
        );
        assert_eq!(f["status.test"], ["Not a valid integer."]);
        assert_eq!(f["device_info"], ["Not a valid mapping type."]);
        assert_eq!(f["extra"], ["Unknown field."]);
        let ok =
            body::<ResultPost>(br#"{"status": {"test": 0}, "device_info": {"ip": "10.0.0.2"}}"#).unwrap();
        assert_eq!(ok.status["test"], 0);
        let f = fields(body::<QueuesIn>(br#"{"rpi4": "Raspberry Pi", "bad": 1}"#).unwrap_err());
        assert_eq!(f["bad"], ["Not a valid string."]);
        let f = fields(body::<ImagesIn>(br#"{"rpi4": {"noble": 1}, "x86": "no"}"#).unwrap_err());
        assert_eq!(f["rpi4.noble"], ["Not a valid string."]);
        assert_eq!(f["x86"], ["Not a valid mapping type."]);
    }

    #[test]
    fn a_body_that_is_not_an_object_or_not_json_is_refused() {
        assert!(matches!(body::<SecretIn>(b"nope"), Err(ApiError::BadRequest(_))));
        assert_eq!(
            fields(body::<SecretIn>(b"[]").unwrap_err())["_schema"],
            ["Invalid input type."]
        );
    }
}
