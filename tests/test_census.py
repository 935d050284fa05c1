"""Reading compiled HLO before it runs: what each instruction is, the census of kernels
per step, their bytes and FLOPs, and the roofline tables."""
from gan_jax.perf import census, hlo, hlo_cost

# A GPU-style optimized module: cuDNN and cuBLAS custom calls, a Triton gemm fusion, fusions
# with and without a reduction, a layout copy, and a while loop holding a body.
_GPU_HLO = """HloModule jit_step, is_scheduled=true

%fused_reduce (param_0: f32[8,4]) -> f32[4] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  %constant.1 = f32[] constant(0)
  ROOT %reduce.1 = f32[4]{0} reduce(f32[8,4]{1,0} %param_0, f32[] %constant.1), dimensions={0}
}

%fused_relu (param_0.1: bf16[8,4]) -> bf16[8,4] {
  %param_0.1 = bf16[8,4]{1,0} parameter(0)
  %constant.2 = bf16[] constant(0)
  %broadcast.1 = bf16[8,4]{1,0} broadcast(bf16[] %constant.2), dimensions={}
  ROOT %maximum.1 = bf16[8,4]{1,0} maximum(bf16[8,4]{1,0} %param_0.1, bf16[8,4]{1,0} %broadcast.1)
}

%triton_dot (p0: bf16[8,4], p1: bf16[4,4]) -> bf16[8,4] {
  %p0 = bf16[8,4]{1,0} parameter(0)
  %p1 = bf16[4,4]{1,0} parameter(1)
  ROOT %dot.1 = bf16[8,4]{1,0} dot(bf16[8,4]{1,0} %p0, bf16[4,4]{1,0} %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (x: bf16[8,4], w: bf16[4,4], img: bf16[8,16,16,3], k: bf16[4,4,3,8]) -> f32[4] {
  %x = bf16[8,4]{1,0} parameter(0)
  %w = bf16[4,4]{1,0} parameter(1)
  %img = bf16[8,16,16,3]{3,2,1,0} parameter(2)
  %k = bf16[4,4,3,8]{3,2,1,0} parameter(3)
  %cudnn-conv.1 = (bf16[8,8,8,8]{3,2,1,0}, u8[0]{0}) custom-call(bf16[8,16,16,3]{3,2,1,0} %img, bf16[4,4,3,8]{3,2,1,0} %k), window={size=4x4 stride=2x2 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward", metadata={op_name="jit(step)/jvp(Discriminator)/Conv_0/conv_general_dilated"}
  %gemm.1 = (bf16[8,4]{1,0}, s8[0]{0}) custom-call(bf16[8,4]{1,0} %x, bf16[4,4]{1,0} %w), custom_call_target="__cublas$gemm"
  %gemm_fusion.1 = bf16[8,4]{1,0} fusion(bf16[8,4]{1,0} %x, bf16[4,4]{1,0} %w), kind=kCustom, calls=%triton_dot
  %loop_fusion.1 = bf16[8,4]{1,0} fusion(bf16[8,4]{1,0} %gemm_fusion.1), kind=kLoop, calls=%fused_relu
  %copy.3 = bf16[4,8]{0,1} copy(bf16[8,4]{1,0} %loop_fusion.1)
  %convert.1 = f32[8,4]{1,0} convert(bf16[8,4]{1,0} %loop_fusion.1)
  %while.1 = (s32[], f32[4]{0}) while((s32[], f32[4]{0}) %t), condition=%cond, body=%body
  ROOT %input_reduce_fusion = f32[4]{0} fusion(f32[8,4]{1,0} %convert.1), kind=kInput, calls=%fused_reduce, metadata={op_name="jit(step)/jvp(Generator)/_Norm_0/BatchNorm_0/reduce_sum"}
}
"""


def test_hlo_ops_names_the_kind_of_work_of_each_instruction():
    ops = hlo.read(_GPU_HLO)
    kinds = {name: info["kind"] for name, info in ops.items()}
    assert kinds["cudnn-conv.1"] == "convolution"
    assert kinds["gemm.1"] == "matmul" and kinds["gemm_fusion.1"] == "matmul"
    assert kinds["loop_fusion.1"] == "elementwise fusion"
    assert kinds["input_reduce_fusion"] == "reduction fusion"
    assert kinds["copy.3"] == "copy/transpose" and kinds["convert.1"] == "other"
    assert kinds["while.1"] == "control"
    assert ops["input_reduce_fusion"]["source"].endswith("BatchNorm_0/reduce_sum")
    assert ops["cudnn-conv.1"]["shape"].startswith("(bf16[8,8,8,8]")
    # Instructions inside fused computations are listed too, with their own opcodes.
    assert ops["reduce.1"]["opcode"] == "reduce" and ops["dot.1"]["kind"] == "matmul"


_LOOP_HLO = """HloModule jit_multi, is_scheduled=true

%fused_add (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %add.1 = f32[4]{0} add(f32[4]{0} %p, f32[4]{0} %p)
}

%fused_sum (q: f32[4]) -> f32[] {
  %q = f32[4]{0} parameter(0)
  %zero = f32[] constant(0)
  ROOT %reduce.2 = f32[] reduce(f32[4]{0} %q, f32[] %zero), dimensions={0}
}

%inner (t.2: (s32[], f32[4])) -> (s32[], f32[4]) {
  %t.2 = (s32[], f32[4]{0}) parameter(0)
  %v.2 = f32[4]{0} get-tuple-element((s32[], f32[4]{0}) %t.2), index=1
  %sum.1 = f32[] fusion(f32[4]{0} %v.2), kind=kInput, calls=%fused_sum, metadata={op_name="jit(multi)/while/body/reduce_sum"}
  ROOT %tuple.2 = (s32[], f32[4]{0}) tuple(s32[] %i.2, f32[4]{0} %v.2)
}

%body (t.1: (s32[], f32[4])) -> (s32[], f32[4]) {
  %t.1 = (s32[], f32[4]{0}) parameter(0)
  %v.1 = f32[4]{0} get-tuple-element((s32[], f32[4]{0}) %t.1), index=1
  %loop_fusion.2 = f32[4]{0} fusion(f32[4]{0} %v.1), kind=kLoop, calls=%fused_add, metadata={op_name="jit(multi)/while/body/adam/add"}
  %conv.2 = (f32[4]{0}, u8[0]{0}) custom-call(f32[4]{0} %v.1, f32[4]{0} %v.1), custom_call_target="__cudnn$convBackwardInput", metadata={op_name="jit(multi)/while/body/transpose(jvp(Discriminator))/Conv_1/conv_general_dilated"}
  %while.2 = (s32[], f32[4]{0}) while((s32[], f32[4]{0}) %t.1), condition=%cond, body=%inner
  ROOT %tuple.1 = (s32[], f32[4]{0}) tuple(s32[] %i.1, f32[4]{0} %loop_fusion.2)
}

%cond (t.3: (s32[], f32[4])) -> pred[] {
  %t.3 = (s32[], f32[4]{0}) parameter(0)
  %i.3 = s32[] get-tuple-element((s32[], f32[4]{0}) %t.3), index=0
  %c.3 = s32[] constant(3)
  ROOT %lt.1 = pred[] compare(s32[] %i.3, s32[] %c.3), direction=LT
}

ENTRY %main (x: f32[4]) -> (s32[], f32[4]) {
  %x = f32[4]{0} parameter(0)
  %conv.1 = (f32[4]{0}, u8[0]{0}) custom-call(f32[4]{0} %x, f32[4]{0} %x), custom_call_target="__cudnn$convForward", metadata={op_name="jit(multi)/jvp(Generator)/UpConv_0/conv_general_dilated"}
  %t.0 = (s32[], f32[4]{0}) tuple(s32[] %i.0, f32[4]{0} %x)
  ROOT %while.1 = (s32[], f32[4]{0}) while((s32[], f32[4]{0}) %t.0), condition=%cond, body=%body
}
"""


def test_the_census_counts_work_outside_and_per_trip_of_each_loop():
    got = census.take(_LOOP_HLO)
    per_call = {k: got["per_call"][k] for k in ("total", "kinds", "parts")}
    assert per_call == {"total": 1, "kinds": {"convolution": 1},
                        "parts": {"Generator forward": 1}}
    # f32[4] read twice and written once; no window, so no FLOPs counted.
    assert got["per_call"]["costs"] == [[48, 0.0]]
    assert got["per_call"]["part_bytes"] == {"Generator forward": 48}
    assert got["per_call"]["work"] == [
        ["conv.1", "convolution", "jvp(Generator)/UpConv_0/conv_general_dilated"]]
    outer, inner = got["loops"]
    # Tuples, parameters and the nested loop itself launch nothing; its body is a loop too.
    assert outer["while"] == "while.1" and outer["total"] == 2 and outer["condition"] == 1
    assert outer["kinds"] == {"elementwise fusion": 1, "convolution": 1}
    assert outer["parts"] == {"Discriminator backward": 1,
                              "other (optimizers, norms, EMA, data, noise)": 1}
    assert inner["while"] == "while.2" and inner["kinds"] == {"reduction fusion": 1}


# A compiled GPU module names its operands without their shapes; a fusion that reads a big
# operand through a dynamic-slice (the data draw) reads only the slice.
_COST_HLO = """HloModule m

%fused_take (data: u8[100,8], i: s32[]) -> f32[2,8] {
  %data = u8[100,8]{1,0} parameter(0)
  %i = s32[] parameter(1)
  %zero = s32[] constant(0)
  %ds = u8[2,8]{1,0} dynamic-slice(%data, %i, %zero), dynamic_slice_sizes={2,8}
  ROOT %f = f32[2,8]{1,0} convert(%ds)
}

ENTRY %main (data: u8[100,8], i: s32[], x: bf16[8,8,8,64], dy: bf16[8,16,16,32], k: bf16[64,4,4,32]) -> f32[2,8] {
  %data = u8[100,8]{1,0} parameter(0)
  %i = s32[] parameter(1)
  %x = bf16[8,8,8,64]{3,2,1,0} parameter(2)
  %dy = bf16[8,16,16,32]{3,2,1,0} parameter(3)
  %k = bf16[64,4,4,32]{3,2,1,0} parameter(4)
  %up = (bf16[8,16,16,32]{3,2,1,0}, u8[0]{0}) custom-call(%x, %k), window={size=4x4 stride=2x2 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardInput"
  %down = (bf16[8,8,8,64]{3,2,1,0}, u8[0]{0}) custom-call(%dy, %k), window={size=4x4 stride=2x2 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward"
  %dk = (bf16[64,4,4,32]{3,2,1,0}, u8[0]{0}) custom-call(%dy, %x), window={size=4x4 stride=2x2 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardFilter"
  ROOT %take = f32[2,8]{1,0} fusion(%data, %i), kind=kLoop, calls=%fused_take
}
"""


def test_each_kernel_is_costed_from_its_shapes():
    costs = dict(zip(("up", "down", "dk", "take"),
                     census.take(_COST_HLO)["per_call"]["costs"]))
    x, dy, k = 8 * 8 * 8 * 64 * 2, 8 * 16 * 16 * 32 * 2, 64 * 4 * 4 * 32 * 2
    assert costs["take"] == [2 * 8 + 4 + 2 * 8 * 4, 0.0]  # the slice, the index, the result
    assert [c[0] for c in (costs["up"], costs["down"], costs["dk"])] == [
        x + k + dy, dy + k + x, dy + x + k]
    # The three convolutions of one stride-2 layer (32 -> 64 channels, 16x16 -> 8x8): each
    # does the forward convolution's multiply-adds.
    forward = 2.0 * 8 * 8 * 8 * 64 * 16 * 32
    assert costs["down"][1] == costs["up"][1] == costs["dk"][1] == forward


def test_the_roofline_floor_takes_the_slower_of_bytes_and_flops():
    assert hlo_cost.floor_s([[10, 0.0], [0, 30.0], [10, 10.0]], 10.0, 10.0) == 1 + 3 + 1
    assert hlo_cost.nbytes("(bf16[8,4]{1,0}, u8[0]{0}, pred[3], s32[])") == 64 + 3 + 4
    row = {"batch": 8, "steps_per_dispatch": 2, "ablation": [],
           "kernels": census.take(_LOOP_HLO)}
    line = census.roofline_table([row], 48.0, 1e9).splitlines()[-1]
    # Per trip 32 + 48 bytes (the fusion, the conv); outside, shared by the 2 steps, 48 (the
    # conv) and 20 (the other loop's sum): 80 / 48 + 68 / 48 / 2 s.
    assert line == "| 8 | 2 | - | 2 | 0.00 | 0 | 2375.00 | 3 |"
    # A timed row is set against its floor.
    line = census.roofline_table([dict(row, ms_per_step=4750.0)], 48.0, 1e9)
    assert "| floor / measured |" in line and line.endswith("| 2375.00 | 3 | 4750.00 | 50% |")


def test_the_kernels_with_the_longest_floors_come_first():
    row = {"kernels": census.take(_COST_HLO)}
    text = census.top_kernels_table(row, 1e9, 1e12, n=4)
    assert text.startswith("The step's floor by kind: convolution 0.79 ms (100%), "
                           "elementwise fusion 0.00 ms (0%)")
    lines = text.splitlines()[4:]
    cells = [ln.strip("| ").split(" | ") for ln in lines]
    # Each convolution moves 262,144 bytes (262 us at 1 GB/s) and does 33.6 MFLOP (34 us).
    assert {c[0] for c in cells[:3]} == {"up", "down", "dk"} and cells[3][0] == "take"
    assert cells[0][1:6] == ["convolution", "0.3", "0.0", "262.1", "33.3%"]
    assert cells[3][4:6] == ["0.1", "0.0%"]  # 84 bytes
    assert len(census.top_kernels_table(row, 1e9, 1e12, n=2).splitlines()) == 6
