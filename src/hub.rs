//! Resolving `-m MODEL`: a local folder or `.gguf` file, or a Hugging Face
//! repo id (`owner/name`) downloaded once into the hub cache with progress
//! bars (native only; the browser fetches files itself).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The files a Hugging Face model folder needs, besides the weights.
#[cfg(not(target_arch = "wasm32"))]
const HF_FILES: &[&str] = &["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"];

/// A local path for `model`: itself when it exists, else a download of the
/// Hugging Face repo of that id.
pub fn resolve(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let looks_like_repo = model.split('/').count() == 2 && !model.starts_with('.') && !model.ends_with(".gguf");
    if !looks_like_repo {
        return Err(Error::Invalid(format!(
            "{model}: no such file or folder (give a .gguf file, a folder with config.json + *.safetensors, or a Hugging Face repo id like microsoft/bitnet-b1.58-2B-4T)"
        )));
    }
    download(model)
}

#[cfg(not(target_arch = "wasm32"))]
fn download(repo_id: &str) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    let hub_error = |what: &str, e: hf_hub::api::sync::ApiError| {
        Error::Invalid(format!(
            "downloading {what} of {repo_id} from the Hugging Face hub failed: {e}. \
             Check the repo id and your network (offline? set HF_HUB_OFFLINE=1 to use only the cache, or pass a local path)"
        ))
    };
    let api = ApiBuilder::from_env().with_progress(true).build().map_err(|e| hub_error("the API client", e))?;
    let repo = api.model(repo_id.to_string());
    let config = repo.get("config.json").map_err(|e| hub_error("config.json", e))?;
    for file in &HF_FILES[1..] {
        if let Err(e) = repo.get(file) {
            log::warn!("{repo_id}: no {file} ({e})");
        }
    }
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let json = std::fs::read_to_string(&index)
                .map_err(|source| Error::Io { path: index.display().to_string(), source })?;
            let parsed: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| Error::Invalid(format!("{}: {e}", index.display())))?;
            let mut shards: Vec<String> = parsed["weight_map"]
                .as_object()
                .map(|m| m.values().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for shard in shards {
                repo.get(&shard).map_err(|e| hub_error(&shard, e))?;
            }
        }
        Err(_) => {
            repo.get("model.safetensors").map_err(|e| hub_error("model.safetensors", e))?;
        }
    }
    Ok(config.parent().expect("a file in the snapshot folder").to_path_buf())
}

#[cfg(target_arch = "wasm32")]
fn download(repo_id: &str) -> Result<PathBuf> {
    Err(Error::Invalid(format!("{repo_id}: downloads from the hub are done by the web page, not the engine")))
}
