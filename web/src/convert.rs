//! Moving values across the JS boundary: objects go through JSON (the
//! browser's `JSON.parse`/`JSON.stringify` on one side, serde on the other),
//! errors become JS `Error`s with the engine's message.

use js_sys::{Function, JSON, Reflect};
use wasm_bindgen::{JsCast, JsError, JsValue};

/// A JS `Error` with `message`.
pub fn error(message: impl std::fmt::Display) -> JsError {
    JsError::new(&message.to_string())
}

/// Text of a thrown JS value (an `Error`'s message, a string, or its JSON).
pub fn describe(value: &JsValue) -> String {
    if let Some(e) = value.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    if let Some(s) = value.as_string() {
        return s;
    }
    JSON::stringify(value).ok().and_then(|s| s.as_string()).unwrap_or_else(|| format!("{value:?}"))
}

/// A serde value as a plain JS object.
pub fn to_js(value: &impl serde::Serialize) -> Result<JsValue, JsError> {
    let text = serde_json::to_string(value).map_err(error)?;
    JSON::parse(&text).map_err(|e| error(format!("building a result object: {}", describe(&e))))
}

/// A plain JS object (or undefined/null: `{}`) as a serde value.
pub fn from_js<T: serde::de::DeserializeOwned>(value: &JsValue, what: &str) -> Result<T, JsError> {
    let text = if value.is_undefined() || value.is_null() {
        "{}".to_string()
    } else {
        JSON::stringify(value)
            .map_err(|e| error(format!("{what} is not a plain object: {}", describe(&e))))?
            .as_string()
            .unwrap_or_else(|| "{}".into())
    };
    serde_json::from_str(&text).map_err(|e| error(format!("{what}: {e}")))
}

/// `object[key]`, undefined when absent or when `object` is not an object.
pub fn get(object: &JsValue, key: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// An optional callback argument: `Some` only for a JS function.
pub fn callback(value: &JsValue) -> Option<Function> {
    value.dyn_ref::<Function>().cloned()
}

/// Whether the page has WebGPU at all (`navigator.gpu`).
pub fn has_webgpu() -> bool {
    let navigator = get(&js_sys::global(), "navigator");
    let gpu = get(&navigator, "gpu");
    !(gpu.is_undefined() || gpu.is_null())
}

pub const NO_WEBGPU: &str = "WebGPU is not available in this browser (navigator.gpu is missing): use a recent \
    Chrome or Edge, or enable WebGPU in Firefox or Safari, and open the page over http://localhost or https";
