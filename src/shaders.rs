//! The WGSL sources in `shaders/`, embedded at compile time, and the small
//! preprocessor that makes variants from one copy of each shader.
//!
//! Preprocessor: lines `#ifdef NAME`, `#ifndef NAME`, `#else`, `#endif`
//! (nestable) keep or drop the lines between them, and `#include
//! "piece.wgsl"` puts a piece of `shaders/include/` (registered in
//! [`INCLUDES`]) in place of its line, preprocessed with the same defines:
//! code that several shaders share (reductions, the online softmax of
//! attention, 16-bit unpacking) is written once. A piece may include
//! another; an include in a dropped branch is skipped; a missing piece, a
//! cycle or a piece included twice into one shader is an error. Two defines
//! have a fixed meaning and are only set by ops after checking
//! [`crate::gpu::Capabilities`]: `F16` (adds `enable f16;`) and `SUBGROUPS`
//! (adds `enable subgroups;`). Everything dynamic (lengths, positions) is
//! passed in buffers, never here.

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
    shader!("matmul_dense", &["PACKED"], &["PACKED", "BF16"]),
    shader!("matmul_q", &["Q4", "Q4_0"], &["Q4", "Q4_1"]),
    shader!("matmul_ternary", &["RAW_I32"]),
    shader!("quantize_int8"),
    shader!("quantize_q8"),
    shader!("rmsnorm"),
    shader!("rope"),
    shader!("topk"),
    // REGISTRY: one line per shader file; keep in alphabetical order.
];

/// A piece of WGSL in `shaders/include/`, pasted by `#include "name"`.
pub struct Include {
    /// The file name, as the directive spells it.
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! piece {
    ($name:literal) => {
        Include { name: $name, source: include_str!(concat!("../shaders/include/", $name)) }
    };
}

/// Every piece the shaders include.
pub const INCLUDES: &[Include] = &[
    piece!("attention_online.wgsl"),
    piece!("embedding_chunk.wgsl"),
    piece!("halves.wgsl"),
    piece!("logits_order.wgsl"),
    piece!("matmul_row_blocks.wgsl"),
    piece!("workgroup_reduce.wgsl"),
    // INCLUDES: one line per file of shaders/include/; keep in alphabetical order.
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

/// Apply `#include`, `#ifdef`/`#ifndef`/`#else`/`#endif` and the fixed
/// `enable` lines, with the pieces of [`INCLUDES`].
pub fn preprocess(source: &str, defines: &[&str]) -> std::result::Result<String, String> {
    let registered = |name: &str| INCLUDES.iter().find(|piece| piece.name == name).map(|piece| piece.source);
    preprocess_with(source, defines, &registered)
}

/// [`preprocess`] with the pieces `include` finds by name.
fn preprocess_with(
    source: &str,
    defines: &[&str],
    include: &dyn Fn(&str) -> Option<&'static str>,
) -> std::result::Result<String, String> {
    let mut expansion = Expansion {
        defines,
        include,
        open: Vec::new(),
        included: Vec::new(),
        out: String::with_capacity(source.len() + 64),
    };
    if defines.contains(&"F16") {
        expansion.out.push_str("enable f16;\n");
    }
    if defines.contains(&"SUBGROUPS") {
        expansion.out.push_str("enable subgroups;\n");
    }
    expansion.expand(source)?;
    Ok(expansion.out)
}

/// One shader being preprocessed.
struct Expansion<'a> {
    defines: &'a [&'a str],
    include: &'a dyn Fn(&str) -> Option<&'static str>,
    /// The pieces being expanded, outermost first (a cycle returns to one).
    open: Vec<String>,
    /// Every piece pasted so far.
    included: Vec<String>,
    out: String,
}

impl Expansion<'_> {
    /// Where line `lineno` (0-based) of the text being expanded is, for errors.
    fn at(&self, lineno: usize) -> String {
        match self.open.last() {
            Some(piece) => format!("{piece} line {}", lineno + 1),
            None => format!("line {}", lineno + 1),
        }
    }

    fn expand(&mut self, source: &str) -> std::result::Result<(), String> {
        // Stack of (this branch active, any enclosing inactive).
        let mut stack: Vec<(bool, bool)> = Vec::new();
        let active = |stack: &Vec<(bool, bool)>| stack.iter().all(|(a, _)| *a);
        for (lineno, line) in source.lines().enumerate() {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix("#ifdef ") {
                stack.push((self.defines.contains(&rest.trim()), false));
            } else if let Some(rest) = t.strip_prefix("#ifndef ") {
                stack.push((!self.defines.contains(&rest.trim()), false));
            } else if t.starts_with("#else") {
                let top = stack.last_mut().ok_or_else(|| format!("{}: #else without #ifdef", self.at(lineno)))?;
                if top.1 {
                    return Err(format!("{}: second #else", self.at(lineno)));
                }
                *top = (!top.0, true);
            } else if t.starts_with("#endif") {
                stack.pop().ok_or_else(|| format!("{}: #endif without #ifdef", self.at(lineno)))?;
            } else if let Some(rest) = t.strip_prefix("#include ") {
                if active(&stack) {
                    self.paste(rest.trim(), lineno)?;
                    continue;
                }
            } else if t.starts_with('#') {
                return Err(format!("{}: unknown directive '{t}'", self.at(lineno)));
            } else if active(&stack) {
                self.out.push_str(line);
                self.out.push('\n');
                continue;
            }
            // Directives and dropped lines become blank: up to the first
            // include, line numbers in error messages stay those of the file.
            self.out.push('\n');
        }
        if !stack.is_empty() {
            let file = self.open.last().map_or(String::new(), |piece| format!("{piece}: "));
            return Err(format!("{file}missing #endif"));
        }
        Ok(())
    }

    /// The piece named by `#include <quoted>` on line `lineno`, expanded in place.
    fn paste(&mut self, quoted: &str, lineno: usize) -> std::result::Result<(), String> {
        let name =
            quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).filter(|name| !name.is_empty()).ok_or_else(
                || format!("{}: expected #include \"name.wgsl\", found #include {quoted}", self.at(lineno)),
            )?;
        if self.open.iter().any(|open| open == name) {
            let mut cycle = self.open.clone();
            cycle.push(name.to_string());
            return Err(format!("{}: include cycle {}", self.at(lineno), cycle.join(" -> ")));
        }
        if self.included.iter().any(|done| done == name) {
            return Err(format!("{}: {name} is included twice", self.at(lineno)));
        }
        let source = (self.include)(name).ok_or_else(|| {
            format!("{}: no piece {name} (add shaders/include/{name} to INCLUDES in src/shaders.rs)", self.at(lineno))
        })?;
        self.open.push(name.to_string());
        self.included.push(name.to_string());
        self.expand(source)?;
        self.open.pop();
        Ok(())
    }
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
mod params_layout;

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
    fn every_file_in_the_include_dir_is_registered_and_used() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/include");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(INCLUDES.iter().any(|piece| piece.name == name), "include/{name} is not in INCLUDES");
        }
        for piece in INCLUDES {
            let directive = format!("#include \"{}\"", piece.name);
            let used = SHADERS.iter().map(|s| s.source).chain(INCLUDES.iter().map(|p| p.source));
            assert!(used.into_iter().any(|source| source.contains(&directive)), "nothing includes {}", piece.name);
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

    #[test]
    fn includes_paste_pieces_preprocessed_with_the_same_defines() {
        let pieces = |name: &str| match name {
            "piece.wgsl" => Some("p\n#ifdef X\nx\n#endif\n"),
            "outer.wgsl" => Some("o\n#include \"piece.wgsl\"\n"),
            "open.wgsl" => Some("#ifdef X\n"),
            "a.wgsl" => Some("#include \"b.wgsl\"\n"),
            "b.wgsl" => Some("#include \"a.wgsl\"\n"),
            _ => None,
        };
        let run = |src: &str, defines: &[&str]| preprocess_with(src, defines, &pieces);
        assert_eq!(run("a\n#include \"piece.wgsl\"\nb\n", &["X"]).unwrap(), "a\np\n\nx\n\nb\n");
        assert_eq!(run("#include \"outer.wgsl\"\n", &[]).unwrap(), "o\np\n\n\n\n");
        // A dropped branch's include is never looked up.
        assert_eq!(run("#ifdef Y\n#include \"nowhere.wgsl\"\n#endif\n", &[]).unwrap(), "\n\n\n");
        // The enable lines come first, once.
        assert_eq!(run("#include \"piece.wgsl\"\n", &["F16"]).unwrap(), "enable f16;\np\n\n\n\n");

        let error = |src: &str| run(src, &[]).unwrap_err();
        assert_eq!(
            error("a\n#include \"nowhere.wgsl\"\n"),
            "line 2: no piece nowhere.wgsl (add shaders/include/nowhere.wgsl to INCLUDES in src/shaders.rs)"
        );
        assert_eq!(error("#include \"a.wgsl\"\n"), "b.wgsl line 1: include cycle a.wgsl -> b.wgsl -> a.wgsl");
        assert_eq!(
            error("#include \"piece.wgsl\"\n#include \"outer.wgsl\"\n"),
            "outer.wgsl line 2: piece.wgsl is included twice"
        );
        assert_eq!(error("#include \"open.wgsl\"\n"), "open.wgsl: missing #endif");
        assert!(error("#include piece.wgsl\n").contains("expected #include \"name.wgsl\""));
    }
}
