// Tree reductions over one workgroup, shared by rmsnorm.wgsl and
// quantize_int8.wgsl. Every invocation passes its value and gets the
// workgroup's result: log2(WG) halving steps in workgroup memory, one
// barrier each, so the order of the operations is fixed.
//
// The including shader sets WG (a power of two) and calls these from uniform
// control flow with lid = local_invocation_index. Each function has its own
// workgroup array and every invocation reads the result from it after the
// last barrier, so calling the same function twice needs a
// workgroupBarrier() between the calls.

var<workgroup> sum_f32: array<f32, WG>;
var<workgroup> max_f32: array<f32, WG>;
var<workgroup> sum_i32: array<i32, WG>;

fn workgroup_sum(lid: u32, value: f32) -> f32 {
    sum_f32[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            sum_f32[lid] += sum_f32[lid + stride];
        }
        workgroupBarrier();
    }
    return sum_f32[0];
}

fn workgroup_max(lid: u32, value: f32) -> f32 {
    max_f32[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            max_f32[lid] = max(max_f32[lid], max_f32[lid + stride]);
        }
        workgroupBarrier();
    }
    return max_f32[0];
}

fn workgroup_sum_i32(lid: u32, value: i32) -> i32 {
    sum_i32[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            sum_i32[lid] += sum_i32[lid + stride];
        }
        workgroupBarrier();
    }
    return sum_i32[0];
}
