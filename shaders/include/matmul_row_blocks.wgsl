// The grid of matmul_q.wgsl and matmul_ternary.wgsl: params.n output rows
// (weight rows), stored so that neighbouring rows' words are neighbours,
// times params.rows tokens.
//
// Workgroups of 64 invocations; each invocation owns ROWS = 4 output rows,
// lid + {0, 64, 128, 192} past the workgroup's first row, so a workgroup
// covers 256 rows and every weight load is contiguous across invocations.
//   gemv: token 0 only (decode). Grid: ceil(n / 256) workgroups, folded into y.
//   gemm: also TOKENS = 4 tokens per invocation, so each weight word loaded
//         serves 4 tokens. Grid: ceil(n / 256) * ceil(rows / 4) workgroups
//         (row blocks fastest), folded into y.
// Rows and tokens past the end are clamped to the last one for loading and
// never written.
//
// The including shader declares `params` (rows, n).

const WG: u32 = 64u;
const ROWS: u32 = 4u;
const TOKENS: u32 = 4u;

// Where invocation lid of gemm workgroup `index` starts: its first row
// and its first token.
struct GemmStart {
    row: u32,
    token: u32,
}

fn gemm_start(index: u32, lid: u32) -> GemmStart {
    let row_blocks = (params.n + WG * ROWS - 1u) / (WG * ROWS);
    return GemmStart((index % row_blocks) * WG * ROWS + lid, (index / row_blocks) * TOKENS);
}

// The ROWS rows of an invocation, clamped to the last row for loading.
fn load_rows(first_row: u32) -> vec4<u32> {
    let last = params.n - 1u;
    return vec4<u32>(first_row, min(first_row + WG, last), min(first_row + 2u * WG, last),
                     min(first_row + 3u * WG, last));
}

// The TOKENS tokens of a gemm invocation, clamped to the last token for loading.
fn load_tokens(first_token: u32) -> vec4<u32> {
    let last = params.rows - 1u;
    return vec4<u32>(first_token, min(first_token + 1u, last), min(first_token + 2u, last),
                     min(first_token + 3u, last));
}
