//! Every Rust struct that is uploaded to (or read back from) a shader buffer
//! against the WGSL struct the shader declares, without a GPU: the same size
//! and the same field names at the same offsets, with the same scalar types.
//! naga's WGSL front end gives the WGSL layout, `offset_of!` the Rust one.
//!
//! Fields whose names start with `_` are padding. A Rust field may sit where
//! a shader has padding (argmax.wgsl does not read top-k's `k`); every other
//! field must be in both. A new struct is one row of the table in
//! [`every_uploaded_struct_matches_its_wgsl_struct`].

use super::{SHADERS, preprocess};
use std::mem::{offset_of, size_of};

/// One field of a struct: name, byte offset, type.
#[derive(Debug)]
struct Field {
    name: String,
    offset: usize,
    ty: String,
}

/// A struct's size (WGSL: its span) and fields.
struct Layout {
    size: usize,
    fields: Vec<Field>,
}

/// The type of the field `field` selects, for the `layout!` macro.
fn field_type<T, F>(_field: fn(&T) -> &F) -> String {
    std::any::type_name::<F>().to_string()
}

/// The layout of a `#[repr(C)]` Rust struct, from its path and every field
/// name (a field added to the struct and not listed here does not compile).
macro_rules! layout {
    ($ty:path { $($field:ident),* $(,)? }) => {{
        let _every_field_is_listed = |value: $ty| {
            let $ty { $($field: _),* } = value;
        };
        Layout {
            size: size_of::<$ty>(),
            fields: vec![$(Field {
                name: stringify!($field).to_string(),
                offset: offset_of!($ty, $field),
                ty: field_type(|value: &$ty| &value.$field),
            }),*],
        }
    }};
}

/// One table row: the WGSL struct `wgsl` of each shader in `shaders` is laid
/// out as the Rust struct `rust` (its path in the messages).
struct Row {
    shaders: &'static [&'static str],
    wgsl: &'static str,
    rust: &'static str,
    layout: Layout,
}

macro_rules! row {
    ($($shader:literal),+ $wgsl:ident == $ty:path { $($field:ident),* $(,)? }) => {
        Row {
            shaders: &[$($shader),+],
            wgsl: stringify!($wgsl),
            rust: stringify!($ty),
            layout: layout!($ty { $($field),* }),
        }
    };
}

/// WGSL's name for a naga type, as Rust's `type_name` spells the same thing.
fn wgsl_type_name(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    let scalar = |s: naga::Scalar| match (s.kind, s.width) {
        (naga::ScalarKind::Uint, 4) => "u32".to_string(),
        (naga::ScalarKind::Sint, 4) => "i32".to_string(),
        (naga::ScalarKind::Float, 4) => "f32".to_string(),
        (naga::ScalarKind::Float, 2) => "f16".to_string(),
        other => format!("{other:?}"),
    };
    match module.types[ty].inner {
        naga::TypeInner::Scalar(s) => scalar(s),
        naga::TypeInner::Vector { size, scalar: s } => format!("[{}; {}]", scalar(s), size as u8),
        ref other => format!("{other:?}"),
    }
}

fn parse(shader: &str, defines: &[&str]) -> Result<naga::Module, String> {
    let source = SHADERS.iter().find(|s| s.name == shader).ok_or(format!("{shader} is not in SHADERS"))?.source;
    let wgsl = preprocess(source, defines)?;
    naga::front::wgsl::parse_str(&wgsl).map_err(|e| e.emit_to_string(&wgsl))
}

/// The layout of struct `name` in `module`.
fn wgsl_layout(module: &naga::Module, name: &str) -> Option<Layout> {
    let ty = module.types.iter().find(|(_, ty)| ty.name.as_deref() == Some(name))?.1;
    let naga::TypeInner::Struct { ref members, span } = ty.inner else {
        return None;
    };
    let fields = members
        .iter()
        .map(|m| Field {
            name: m.name.clone().unwrap_or_default(),
            offset: m.offset as usize,
            ty: wgsl_type_name(module, m.ty),
        })
        .collect();
    Some(Layout { size: span as usize, fields })
}

/// What differs between `wgsl` and `rust`, one line each.
fn differences(wgsl: &Layout, rust: &Layout) -> Vec<String> {
    let mut out = Vec::new();
    if wgsl.size != rust.size {
        out.push(format!("size {} bytes in WGSL, {} in Rust", wgsl.size, rust.size));
    }
    let padding = |name: &str| name.starts_with('_');
    for w in wgsl.fields.iter().filter(|f| !padding(&f.name)) {
        match rust.fields.iter().find(|r| r.name == w.name) {
            None => out.push(format!("field `{}` (offset {}) is missing in Rust", w.name, w.offset)),
            Some(r) if r.offset != w.offset => {
                out.push(format!("field `{}` at offset {} in WGSL, {} in Rust", w.name, w.offset, r.offset))
            }
            Some(r) if r.ty != w.ty => out.push(format!("field `{}` is {} in WGSL, {} in Rust", w.name, w.ty, r.ty)),
            Some(_) => {}
        }
    }
    for r in rust.fields.iter().filter(|f| !padding(&f.name)) {
        let named = wgsl.fields.iter().any(|w| w.name == r.name);
        let over_padding = wgsl.fields.iter().any(|w| padding(&w.name) && w.offset == r.offset);
        if !named && !over_padding {
            out.push(format!("field `{}` (offset {}) is neither in WGSL nor over its padding", r.name, r.offset));
        }
    }
    out
}

fn table() -> Vec<Row> {
    use crate::bench::copy;
    use crate::ops::{
        attention, delta, elementwise, embedding, hybrid, matmul, quant, rmsnorm, rope, sampling, ternary,
    };
    vec![
        row!("argmax", "topk" Params == sampling::Params { n, offset, k, _pad }),
        row!("attention" Params == attention::Params {
            rows, pos0, heads, kv_heads, head_dim, max_seq, scale, sink_rows, ring_rows, _pad
        }),
        row!("attention_hybrid" Params == hybrid::HybridParams {
            rows, pos0, heads, kv_heads, head_dim, max_seq, mask_words, window, sinks, scale, sink_rows, ring_rows,
            capacity, _pad
        }),
        row!("copy" Params == copy::Params { count, _pad }),
        row!("delta_keys" Params == delta::DeltaParams {
            rows, pos0, kv_heads, head_dim, max_seq, mask_words, capacity, theta
        }),
        row!("elementwise" Params == elementwise::Params { len, _pad }),
        row!("embedding" Params == embedding::Params {
            tokens, dim, row_words, first_row, chunk_rows, vocab, owns_invalid, invalid_value
        }),
        row!("embedding_q" Params == quant::GatherParams {
            tokens, blocks, first_row, chunk_rows, vocab, owns_invalid, invalid_value, _pad
        }),
        row!("matmul_dense" Params == matmul::Params { tokens, rows, k, row_words, out_offset, out_stride, _pad }),
        row!("matmul_q" Params == quant::MatmulParams { rows, n, blocks, out_offset, out_stride, _pad }),
        row!("matmul_ternary" Params == ternary::MatmulParams { rows, n, k_groups, convention, weight_scale, _pad }),
        row!("quantize_int8" Params == ternary::QuantizeParams { rows, k, k_words, _pad }),
        row!("quantize_q8" Params == quant::QuantizeParams { rows, blocks, _pad }),
        row!("rmsnorm" Params == rmsnorm::Params { rows, dim, eps, _pad }),
        row!("rope" Params == rope::Params { rows, pos0, heads, kv_heads, head_dim, _pad }),
        // Read back, not uploaded: the top-k result.
        row!("topk" Entry == sampling::TopKEntry { id, value }),
    ]
}

#[test]
fn every_uploaded_struct_matches_its_wgsl_struct() {
    let table = table();
    let mut failures = Vec::new();
    for shader in SHADERS {
        let empty: &[&str] = &[];
        for defines in std::iter::once(empty).chain(shader.variants.iter().copied()) {
            let label = format!("{}.wgsl {defines:?}", shader.name);
            let module = match parse(shader.name, defines) {
                Ok(module) => module,
                Err(e) => {
                    failures.push(format!("{label}: {e}"));
                    continue;
                }
            };
            for row in table.iter().filter(|row| row.shaders.contains(&shader.name)) {
                let Some(wgsl) = wgsl_layout(&module, row.wgsl) else {
                    failures.push(format!("{label}: no struct {} (for {})", row.wgsl, row.rust));
                    continue;
                };
                for difference in differences(&wgsl, &row.layout) {
                    failures.push(format!("{label} struct {} vs {}: {difference}", row.wgsl, row.rust));
                }
            }
            // A shader's `params` needs a row, so a new shader cannot be missed.
            let params = module.global_variables.iter().find(|(_, v)| v.name.as_deref() == Some("params"));
            if let Some((_, params)) = params {
                let name = module.types[params.ty].name.clone().unwrap_or_default();
                if !table.iter().any(|row| row.shaders.contains(&shader.name) && row.wgsl == name) {
                    failures.push(format!("{label}: struct {name} of `params` has no row in the table"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_moved_field_is_reported_with_shader_struct_and_field() {
    #[repr(C)]
    struct Swapped {
        dim: u32,
        rows: u32,
        eps: f32,
        _pad: u32,
    }
    #[repr(C)]
    struct Shorter {
        rows: u32,
        dim: u32,
        eps: u32,
    }
    let module = parse("rmsnorm", &[]).unwrap();
    let wgsl = wgsl_layout(&module, "Params").unwrap();
    assert_eq!(
        differences(&wgsl, &layout!(Swapped { dim, rows, eps, _pad })),
        ["field `rows` at offset 0 in WGSL, 4 in Rust", "field `dim` at offset 4 in WGSL, 0 in Rust"]
    );
    assert_eq!(
        differences(&wgsl, &layout!(Shorter { rows, dim, eps })),
        ["size 16 bytes in WGSL, 12 in Rust", "field `eps` is f32 in WGSL, u32 in Rust"]
    );
}
