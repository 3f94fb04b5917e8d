//! The WGSL sources in `shaders/`, embedded at compile time, and the small
//! preprocessor that makes variants from one copy of each shader.
//!
//! Preprocessor: lines `#ifdef NAME`, `#ifndef NAME`, `#else`, `#endif`
//! (nestable) keep or drop the lines between them. Two defines have a fixed
//! meaning and are only set by ops after checking [`crate::gpu::Capabilities`]:
//! `F16` (adds `enable f16;`) and `SUBGROUPS` (adds `enable subgroups;`).
//! Everything dynamic (lengths, positions) is passed in buffers, never here.

use crate::error::{Error, Result};

/// One shader file and the define sets it is meant to be built with.
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
    /// Define sets to validate besides the empty one.
    pub variants: &'static [&'static [&'static str]],
}

macro_rules! shader {
    ($name:literal $(, $variant:expr)* $(,)?) => {
        Shader {
            name: $name,
            source: include_str!(concat!("../shaders/", $name, ".wgsl")),
            variants: &[$($variant),*],
        }
    };
}

/// Every shader of the engine.
pub const SHADERS: &[Shader] = &[
    shader!("argmax"),
    shader!("attention"),
    shader!("attention_hybrid"),
    shader!("copy"),
    shader!("delta_keys"),
    shader!("elementwise"),
    shader!("embedding", &["PACKED"], &["PACKED", "BF16"]),
    shader!("embedding_q", &["Q4", "Q4_0"], &["Q4", "Q4_1"]),
    shader!("matmul_f16", &["BF16"]),
    shader!("matmul_f32"),
    shader!("matmul_q", &["Q4", "Q4_0"], &["Q4", "Q4_1"]),
    shader!("matmul_ternary", &["RAW_I32"]),
    shader!("quantize_int8"),
    shader!("quantize_q8"),
    shader!("rmsnorm"),
    shader!("rope"),
    shader!("topk"),
    // REGISTRY: one line per shader file; keep in alphabetical order.
];

pub fn source(name: &str) -> Result<&'static str> {
    SHADERS.iter().find(|s| s.name == name).map(|s| s.source).ok_or_else(|| Error::Shader {
        name: name.to_string(),
        stage: "find",
        message: "not in the shader registry (src/shaders.rs)".into(),
    })
}

/// The source of `name` with `defines` applied.
pub fn preprocessed(name: &str, defines: &[&str]) -> Result<String> {
    preprocess(source(name)?, defines).map_err(|message| Error::Shader {
        name: name.to_string(),
        stage: "preprocess",
        message,
    })
}

/// Apply `#ifdef`/`#ifndef`/`#else`/`#endif` and the fixed `enable` lines.
pub fn preprocess(source: &str, defines: &[&str]) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(source.len() + 64);
    if defines.contains(&"F16") {
        out.push_str("enable f16;\n");
    }
    if defines.contains(&"SUBGROUPS") {
        out.push_str("enable subgroups;\n");
    }
    // Stack of (this branch active, any enclosing inactive).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &Vec<(bool, bool)>| stack.iter().all(|(a, _)| *a);
    for (lineno, line) in source.lines().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("#ifdef ") {
            stack.push((defines.contains(&rest.trim()), false));
        } else if let Some(rest) = t.strip_prefix("#ifndef ") {
            stack.push((!defines.contains(&rest.trim()), false));
        } else if t.starts_with("#else") {
            let top = stack.last_mut().ok_or(format!("line {}: #else without #ifdef", lineno + 1))?;
            if top.1 {
                return Err(format!("line {}: second #else", lineno + 1));
            }
            *top = (!top.0, true);
        } else if t.starts_with("#endif") {
            stack.pop().ok_or(format!("line {}: #endif without #ifdef", lineno + 1))?;
        } else if t.starts_with('#') {
            return Err(format!("line {}: unknown directive '{t}'", lineno + 1));
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // Directives and dropped lines become blank: line numbers in error
        // messages stay those of the file.
        out.push('\n');
    }
    if !stack.is_empty() {
        return Err("missing #endif".into());
    }
    Ok(out)
}

/// Parse and validate one WGSL source with naga (no GPU needed).
pub fn validate(name: &str, wgsl: &str) -> std::result::Result<(), String> {
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| e.emit_to_string_with_path(wgsl, name))?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| e.emit_to_string_with_path(wgsl, name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shader_variant_passes_naga_validation() {
        let mut failures = Vec::new();
        let mut checked = 0;
        for shader in SHADERS {
            let empty: &[&str] = &[];
            for defines in std::iter::once(empty).chain(shader.variants.iter().copied()) {
                let label = format!("{}.wgsl {:?}", shader.name, defines);
                match preprocess(shader.source, defines) {
                    Ok(src) => {
                        if let Err(e) = validate(&label, &src) {
                            failures.push(format!("{label}:\n{e}"));
                        }
                    }
                    Err(e) => failures.push(format!("{label}: {e}")),
                }
                checked += 1;
            }
        }
        assert!(checked >= SHADERS.len());
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn every_file_in_shaders_dir_is_registered() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wgsl") {
                let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
                assert!(SHADERS.iter().any(|s| s.name == stem), "{stem}.wgsl is not in SHADERS");
            }
        }
    }

    #[test]
    fn a_broken_shader_is_reported() {
        assert!(validate("broken", "fn main() { let x: f32 = 1u; }").is_err());
    }

    #[test]
    fn preprocessor_selects_branches() {
        let src = "a\n#ifdef X\nb\n#else\nc\n#endif\n#ifndef Y\nd\n#endif\n";
        assert_eq!(preprocess(src, &["X"]).unwrap(), "a\n\nb\n\n\n\n\nd\n\n");
        assert_eq!(preprocess(src, &["Y"]).unwrap(), "a\n\n\n\nc\n\n\n\n\n");
        assert!(preprocess("#ifdef X\n", &[]).is_err());
        assert!(preprocess("#endif\n", &[]).is_err());
        assert!(preprocess("#include x\n", &[]).is_err());
    }
}
