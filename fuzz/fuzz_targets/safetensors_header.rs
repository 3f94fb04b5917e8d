//! Any byte string must open as a safetensors checkpoint or fail cleanly;
//! every tensor of a parsed one converts or errors.
#![no_main]

use deltallm::loader::SafeTensors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(checkpoint) =
        SafeTensors::from_bytes(vec![("fuzz.safetensors".into(), data.to_vec())])
    {
        for name in checkpoint.names() {
            if let Ok(view) = checkpoint.tensor(name) {
                let _ = (view.to_f32(), view.as_u8(), view.as_i8());
            }
        }
    }
});
