//! The Kubernetes manifests of `deploy/`, read as typed API objects
//! (k8s-openapi): shared by the packaging checks and the podman runs.

use std::path::{Path, PathBuf};

use k8s_openapi::Resource;
use serde::{Deserialize as _, Serialize, de::DeserializeOwned};

/// A file under `deploy/`.
pub fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

/// Every non-empty document of a multi-document YAML file under `deploy/`.
pub fn documents(file: &str) -> Vec<serde_yaml::Value> {
    let path = deploy(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The one document of kind `T`, as the typed API object. It must survive
/// a round trip unchanged: k8s-openapi skips fields it does not know, so a
/// misspelt field (`readonly:`) would otherwise pass unnoticed and be
/// dropped by the API server just the same.
pub fn object<T: Resource + DeserializeOwned + Serialize>(docs: &[serde_yaml::Value]) -> T {
    let mut found: Vec<&serde_yaml::Value> = docs
        .iter()
        .filter(|doc| doc["kind"].as_str() == Some(T::KIND))
        .collect();
    assert_eq!(found.len(), 1, "exactly one {} document", T::KIND);
    let doc = found.remove(0);
    assert_eq!(
        doc["apiVersion"].as_str(),
        Some(T::API_VERSION),
        "{}",
        T::KIND
    );
    let typed: T = serde_yaml::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} does not match the API: {e}", T::KIND));
    let original = serde_json::to_value(doc).expect("YAML as JSON");
    let again = serde_json::to_value(&typed).expect("serialize");
    assert_eq!(
        again,
        original,
        "{} has fields the API does not know (misspelt?): written\n{:#}\nparsed\n{:#}",
        T::KIND,
        original,
        again
    );
    typed
}
