// A CPU emulation of the part of the CUDA execution model the distill kernels use, so that
// their logic (indexing, tiling, reductions, masking, every output written) can be checked
// with g++ on a machine without a GPU. Not a performance model and not a replacement for the
// GPU run: timing, memory ordering and nvcc's code are not exercised.
//
// Model: the blocks of a grid run one after another on one OS thread; every CUDA thread of
// the running block is a fiber (ucontext) with its own stack. Fibers run until they reach a
// barrier: `__syncthreads` releases when every live thread of the block waits there,
// `__syncwarp` when every live thread of the warp does, and `__shfl_xor_sync` is an exchange
// through a per-warp buffer between two warp barriers. A thread that returns leaves its
// barriers, like an exited CUDA thread. A static `__shared__` array (a `static` here) and the
// dynamic shared buffer (filled with NaN before each block) are private to the running block.
// Kernels compile unchanged except `extern __shared__ float smem[];`, which emulate.sh
// rewrites to use `emu::dynamic_shared`.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct EmuDim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace emu {

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
    ucontext_t context;
    char *stack = nullptr;
    EmuDim3 index;
    State state = State::Ready;
};

constexpr size_t STACK_BYTES = 128 * 1024;

inline EmuDim3 block_idx, block_dim, grid_dim;
inline std::vector<Fiber> fibers;
inline std::vector<std::unique_ptr<char[]>> stacks;  // kept across launches, never zeroed
inline Fiber *current = nullptr;
inline ucontext_t scheduler;
inline const std::function<void()> *kernel = nullptr;
inline std::vector<float> dynamic_shared(1 << 18);
inline unsigned char warp_lanes[32][32][8];  // [warp][lane] exchange slots of the shuffles

inline void fiber_main() {
    (*kernel)();
    current->state = State::Done;  // uc_link returns to the scheduler
}

inline void wait(State state) {
    current->state = state;
    swapcontext(&current->context, &scheduler);
}

// Releases the barrier every live thread of `first..last` waits at, if they all wait at it.
inline bool release(size_t first, size_t last, State barrier) {
    bool any = false;
    for (size_t i = first; i < last; ++i) {
        if (fibers[i].state == State::Done) continue;
        if (fibers[i].state != barrier) return false;
        any = true;
    }
    for (size_t i = first; i < last; ++i)
        if (fibers[i].state == barrier) fibers[i].state = State::Ready;
    return any;
}

inline void run_block() {
    for (size_t t = 0; t < fibers.size(); ++t) {
        Fiber &f = fibers[t];
        f.index = EmuDim3{(unsigned)t, 0, 0};
        f.state = State::Ready;
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack;
        f.context.uc_stack.ss_size = STACK_BYTES;
        f.context.uc_link = &scheduler;
        makecontext(&f.context, fiber_main, 0);
    }
    for (;;) {
        bool ran = false;
        for (Fiber &f : fibers) {
            if (f.state != State::Ready) continue;
            current = &f;
            swapcontext(&scheduler, &f.context);
            ran = true;
        }
        if (ran) continue;
        bool released = false;
        for (size_t w = 0; w < fibers.size() / 32; ++w)
            released |= release(32 * w, 32 * w + 32, State::AtWarpBarrier);
        if (!released) released = release(0, fibers.size(), State::AtBlockBarrier);
        if (released) continue;
        if (std::all_of(fibers.begin(), fibers.end(), [](const Fiber &f) { return f.state == State::Done; }))
            return;
        std::fprintf(stderr, "emu: deadlock in block (%u, %u): threads wait at different barriers\n",
                     block_idx.x, block_idx.y);
        std::abort();
    }
}

// Runs `body()` as a kernel on `grid` blocks of `threads` threads (a multiple of 32).
inline void launch(EmuDim3 grid, unsigned threads, const std::function<void()> &body) {
    if (threads % 32 != 0 || threads > 1024) std::abort();
    grid_dim = grid;
    block_dim = EmuDim3{threads, 1, 1};
    kernel = &body;
    while (stacks.size() < threads) stacks.emplace_back(new char[STACK_BYTES]);
    fibers = std::vector<Fiber>(threads);
    for (unsigned t = 0; t < threads; ++t) fibers[t].stack = stacks[t].get();
    for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            block_idx = EmuDim3{bx, by, 0};
            std::fill(dynamic_shared.begin(), dynamic_shared.end(), NAN);
            run_block();
        }
    fibers.clear();
    kernel = nullptr;
}

}  // namespace emu

#define threadIdx (emu::current->index)
#define blockIdx emu::block_idx
#define blockDim emu::block_dim
#define gridDim emu::grid_dim

inline void __syncthreads() { emu::wait(emu::State::AtBlockBarrier); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::wait(emu::State::AtWarpBarrier); }

template <typename T> T __shfl_xor_sync(unsigned, T value, int lane_mask) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    std::memcpy(emu::warp_lanes[warp][lane], &value, sizeof(T));
    __syncwarp();
    T other;
    std::memcpy(&other, emu::warp_lanes[warp][lane ^ (unsigned)lane_mask], sizeof(T));
    __syncwarp();
    return other;
}

inline unsigned long long atomicMin(unsigned long long *address, unsigned long long value) {
    const unsigned long long old = *address;
    *address = std::min(old, value);
    return old;
}

template <typename A, typename B> inline auto min(A a, B b) { return a < b ? a : b; }
template <typename A, typename B> inline auto max(A a, B b) { return a < b ? b : a; }
