//! Embedding gather, as [`crate::ops::embedding`] must compute it.

/// Row `ids[t]` of `table` (`[vocab][dim]`) for each token; an id outside the
/// table gives a row of NaN, as the GPU kernel writes.
pub fn embedding(table: &[f32], dim: usize, ids: &[u32]) -> Vec<f32> {
    assert_eq!(table.len() % dim, 0, "table is not a whole number of rows");
    let vocab = table.len() / dim;
    ids.iter()
        .flat_map(|&id| {
            let id = id as usize;
            if id < vocab { table[id * dim..(id + 1) * dim].to_vec() } else { vec![f32::NAN; dim] }
        })
        .collect()
}
