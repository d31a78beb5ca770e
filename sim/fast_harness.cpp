// spikeforge's compiled regression harness (see spikeforge.sim.fast_engine).
//
// Verilated together with a generated accelerator top (module prefix Vtop: ports clk, rst,
// pixels__valid/ready/payload {data:8, last:1}, results__valid/ready/payload). No Python per cycle:
// it streams a sample file through the design and writes every result beat with its cycle.
//
//   harness SAMPLES N F OUT [--alone 0|1] [--reset R] [--idle-limit L] [--tail C] [--progress S]
//
// SAMPLES holds N*F raw bytes (sample after sample). The run: R cycles of reset; with --alone 1,
// sample 0 into the idle pipeline until its result (the latency); then all N samples back to back
// with `results` always ready (the stream); then C more cycles in which any result beat is stray.
// A transfer happens on a rising edge where valid and ready are both high; its cycle is the number
// of that rising edge counted from the start (the reset edges are 1..R).
//
// OUT (little endian): "SFFAST01", then u64 words_per_result, u64 N, u64 alone_first_beat,
// u64 alone_result_cycle, u64 cycles, u64 received, u64 stray, u64 status (0 ok, 1 deadlock),
// then per received stream result: u64 first_beat, u64 result_cycle, u32 x words_per_result payload
// (LSB word first). Progress lines "P <results> <cycle>" go to stdout every S seconds; at the end
// "Q <cycles>" counts the cycles whose falling edge skipped the scheduler (SF_FAST_CLOCK; 0 without it).

// Verilator spells a double underscore in a port name as ___05F (pixels__valid -> pixels___05Fvalid).
//
// Built by spikeforge.sim.fast_engine in one translation unit with the design's per-cycle code, so
// the scheduler's entry point below is visible here. Per clock edge the loop calls it directly:
// Vtop::eval() would add, twice a cycle, the runtime's garbage-deleter lock and end-of-eval message
// check, which serve class objects and multithreaded models (neither exists in these designs). The
// first eval goes through Vtop::eval(), which runs the initial blocks and settles the model.
//
// With SF_FAST_CLOCK (fast_engine sets it when the clock's rising edge is the scheduler's only trigger),
// a cycle whose inputs did not change skips the input-combinational region: on the Fashion-MNIST
// 784-128-10 design that is a quarter of the instructions per cycle (callgrind: 6,240 -> 4,750), with
// byte-identical output files.
#include "Vtop.h"
#include "Vtop___024root.h"
#include "verilated.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

double sc_time_stamp() { return 0; }

void Vtop___024root___eval(Vtop___024root* vlSelf);
#ifdef SF_FAST_CLOCK
// The scheduler's two regions after the input-combinational one (generated beside Vtop___024root___eval;
// fast_engine defines SF_FAST_CLOCK only when the generated code has them and the clock's edge detector).
bool Vtop___024root___eval_phase__act(Vtop___024root* vlSelf);
bool Vtop___024root___eval_phase__nba(Vtop___024root* vlSelf);
#endif

namespace {

template <typename T>
constexpr int words_of() {
    if constexpr (std::is_integral_v<T>) {
        return (int)((sizeof(T) * 8 + 31) / 32);
    } else {
        return (int)(sizeof(T) / sizeof(uint32_t));
    }
}

template <typename T>
void copy_words(const T& value, uint32_t* out) {
    if constexpr (std::is_integral_v<T>) {
        uint64_t v = (uint64_t)value;
        for (int i = 0; i < words_of<T>(); ++i) out[i] = (uint32_t)(v >> (32 * i));
    } else {
        for (int i = 0; i < words_of<T>(); ++i) out[i] = value[i];
    }
}

using Payload = std::remove_reference_t<decltype(std::declval<Vtop>().results___05Fpayload)>;
constexpr int kWords = words_of<Payload>();

struct Sim {
    Vtop* top;
    Vtop___024root* root;
    uint64_t cycle = 0;
    uint64_t quiet = 0;     // cycles whose falling edge skipped the scheduler (SF_FAST_CLOCK)
    // The model has settled every signal for the inputs on its ports (false after reset changes, or at first).
    bool settled = false;

    // Something outside step() wrote an input (reset): the next falling edge settles the model again.
    void inputs_written() { settled = false; }

    // One clock cycle: the falling edge with this cycle's inputs, the handshakes they make, the rising edge.
    inline void step(bool valid, uint32_t payload, bool ready, bool& took_pixel, bool& took_result,
                     uint32_t* result_words) {
        top->clk = 0;
#ifdef SF_FAST_CLOCK
        // Verilator's eval() runs the input-combinational region on every call, twice a cycle. Here it
        // runs only when an input changed: after a rising edge the model has settled every signal for
        // the inputs it had, so with the same inputs the falling edge only has to record the clock's
        // level for the edge detector. The rising edge then runs the active and NBA regions alone.
        const bool same = settled && top->pixels___05Fvalid == valid && top->pixels___05Fpayload == payload
                          && top->results___05Fready == ready;
#else
        const bool same = false;
#endif
        top->pixels___05Fvalid = valid;
        top->pixels___05Fpayload = payload;
        top->results___05Fready = ready;
        if (same) {
#ifdef SF_FAST_CLOCK
            root->__Vtrigprevexpr___TOP__clk__0 = 0;
#endif
            ++quiet;
        } else {
            Vtop___024root___eval(root);
            settled = true;
        }
        took_pixel = valid && top->pixels___05Fready;
        took_result = ready && top->results___05Fvalid;
        if (took_result) copy_words(top->results___05Fpayload, result_words);
        top->clk = 1;
#ifdef SF_FAST_CLOCK
        do {
            while (Vtop___024root___eval_phase__act(root)) {
            }
        } while (Vtop___024root___eval_phase__nba(root));
#else
        Vtop___024root___eval(root);
#endif
        ++cycle;
    }
};

void put64(std::vector<uint8_t>& out, uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back((uint8_t)(v >> (8 * i)));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: %s SAMPLES N F OUT [--alone 0|1] [--reset R] [--idle-limit L] "
                             "[--tail C] [--progress S]\n", argv[0]);
        return 2;
    }
    const char* samples_path = argv[1];
    const uint64_t n = std::strtoull(argv[2], nullptr, 10);
    const uint64_t f = std::strtoull(argv[3], nullptr, 10);
    const char* out_path = argv[4];
    bool alone = true;
    uint64_t reset_cycles = 4, idle_limit = 1000000, tail = 200;
    double progress_seconds = 0.0;
    for (int i = 5; i + 1 < argc; i += 2) {
        std::string key = argv[i];
        const char* value = argv[i + 1];
        if (key == "--alone") alone = std::atoi(value) != 0;
        else if (key == "--reset") reset_cycles = std::strtoull(value, nullptr, 10);
        else if (key == "--idle-limit") idle_limit = std::strtoull(value, nullptr, 10);
        else if (key == "--tail") tail = std::strtoull(value, nullptr, 10);
        else if (key == "--progress") progress_seconds = std::atof(value);
        else {
            std::fprintf(stderr, "unknown option %s\n", key.c_str());
            return 2;
        }
    }
    if (n == 0 || f == 0) {
        std::fprintf(stderr, "N and F must be >= 1\n");
        return 2;
    }
    std::vector<uint8_t> samples(n * f);
    {
        FILE* in = std::fopen(samples_path, "rb");
        if (!in || std::fread(samples.data(), 1, samples.size(), in) != samples.size()) {
            std::fprintf(stderr, "cannot read %llu bytes from %s\n", (unsigned long long)samples.size(),
                         samples_path);
            return 2;
        }
        std::fclose(in);
    }

    auto context = std::make_unique<VerilatedContext>();
    context->commandArgs(1, argv);
    Vtop* top = new Vtop{context.get()};
    Sim sim{top, top->rootp};
    bool took_pixel = false, took_result = false;
    uint32_t words[kWords > 0 ? kWords : 1];

    // Reset: the first R rising edges with rst high.
    top->clk = 1;
    top->rst = 1;
    top->pixels___05Fvalid = 0;
    top->results___05Fready = 0;
    top->eval();
    for (uint64_t i = 0; i < reset_cycles; ++i) sim.step(false, 0, false, took_pixel, took_result, words);
    top->rst = 0;
    sim.inputs_written();

    const uint64_t record = 16 + 4 * (uint64_t)kWords;
    std::vector<uint8_t> out;
    out.reserve(64 + n * record);
    std::vector<uint8_t> body;
    body.reserve(n * record);
    uint64_t status = 0, stray = 0, received = 0;
    uint64_t alone_first = 0, alone_result = 0;
    auto started = std::chrono::steady_clock::now();
    auto last_report = started;

    auto pixel_payload = [&](uint64_t sample, uint64_t beat) -> uint32_t {
        return (uint32_t)samples[sample * f + beat] | ((beat + 1 == f) ? 0x100u : 0u);
    };

    // Phase "alone": sample 0 into the idle pipeline, then wait for its result.
    if (alone) {
        uint64_t beat = 0, idle = 0;
        bool done = false;
        while (!done) {
            bool valid = beat < f;
            sim.step(valid, valid ? pixel_payload(0, beat) : 0, true, took_pixel, took_result, words);
            if (took_pixel) {
                if (beat == 0) alone_first = sim.cycle;
                ++beat;
            }
            if (took_result) {
                alone_result = sim.cycle;
                done = true;
            }
            idle = (took_pixel || took_result) ? 0 : idle + 1;
            if (idle >= idle_limit) {
                std::fprintf(stderr, "deadlock in phase 'alone': no beat moved for %llu cycles (cycle %llu), "
                                     "%llu of %llu pixel beats taken\n", (unsigned long long)idle_limit,
                             (unsigned long long)sim.cycle, (unsigned long long)beat, (unsigned long long)f);
                status = 1;
                break;
            }
        }
    }

    // Phase "stream": every sample back to back, results always ready.
    std::vector<uint64_t> first_beat(n, 0);
    if (status == 0) {
        uint64_t sample = 0, beat = 0, idle = 0;
        while (received < n) {
            bool valid = sample < n;
            sim.step(valid, valid ? pixel_payload(sample, beat) : 0, true, took_pixel, took_result, words);
            if (took_pixel) {
                if (beat == 0) first_beat[sample] = sim.cycle;
                if (++beat == f) {
                    beat = 0;
                    ++sample;
                }
            }
            if (took_result) {
                put64(body, first_beat[received]);
                put64(body, sim.cycle);
                for (int i = 0; i < kWords; ++i)
                    for (int b = 0; b < 4; ++b) body.push_back((uint8_t)(words[i] >> (8 * b)));
                ++received;
            }
            idle = (took_pixel || took_result) ? 0 : idle + 1;
            if (idle >= idle_limit) {
                std::fprintf(stderr, "deadlock in phase 'stream': no beat moved for %llu cycles (cycle %llu); "
                                     "%llu of %llu samples sent, %llu results received\n",
                             (unsigned long long)idle_limit, (unsigned long long)sim.cycle,
                             (unsigned long long)sample, (unsigned long long)n, (unsigned long long)received);
                status = 1;
                break;
            }
            if (progress_seconds > 0 && (sim.cycle & 0x3fff) == 0) {
                auto now = std::chrono::steady_clock::now();
                if (std::chrono::duration<double>(now - last_report).count() >= progress_seconds) {
                    std::printf("P %llu %llu\n", (unsigned long long)received, (unsigned long long)sim.cycle);
                    std::fflush(stdout);
                    last_report = now;
                }
            }
        }
    }
    // Tail: anything that comes out now is stray.
    if (status == 0) {
        for (uint64_t i = 0; i < tail; ++i) {
            sim.step(false, 0, true, took_pixel, took_result, words);
            if (took_result) ++stray;
        }
    }
    top->final();

    out.insert(out.end(), {'S', 'F', 'F', 'A', 'S', 'T', '0', '1'});
    put64(out, (uint64_t)kWords);
    put64(out, n);
    put64(out, alone_first);
    put64(out, alone_result);
    put64(out, sim.cycle);
    put64(out, received);
    put64(out, stray);
    put64(out, status);
    out.insert(out.end(), body.begin(), body.end());
    FILE* file = std::fopen(out_path, "wb");
    if (!file || std::fwrite(out.data(), 1, out.size(), file) != out.size() || std::fclose(file) != 0) {
        std::fprintf(stderr, "cannot write %s\n", out_path);
        return 2;
    }
    std::printf("P %llu %llu\n", (unsigned long long)received, (unsigned long long)sim.cycle);
    std::printf("Q %llu\n", (unsigned long long)sim.quiet);
    delete top;
    return status == 0 ? 0 : 1;
}
