// Reference for tests/engine/test_sampling.py: llama.cpp's 2024 samplers (llama-sampling.cpp, common/sampling.cpp
// `llama_sampling_sample`) cut down to plain C++, compiled with g++/libstdc++ to produce the expected draws.
//   g++ -O2 -std=c++17 -o /tmp/llama_sampling_ref llama_sampling_ref.cpp
//   /tmp/llama_sampling_ref LOGITS.f32 SEED N_DRAWS TEMP TOP_K TOP_P MIN_P TYPICAL TFS REPEAT_LAST_N REPEAT FREQ
//                            PRESENT MIROSTAT TAU ETA
// LOGITS.f32 is raw little-endian float32 (vocab,). Each draw starts again from those logits; the drawn token is
// appended to the penalty history (without llama.cpp's 64-zero prefill). Prints the token ids, one per line.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <unordered_map>
#include <vector>

struct tok { int id; float logit; float p; };
struct cands { std::vector<tok> d; bool sorted = false; };

static void softmax(cands & c) {
    if (!c.sorted) {
        std::sort(c.d.begin(), c.d.end(), [](const tok & a, const tok & b) { return a.logit > b.logit; });
        c.sorted = true;
    }
    float max_l = c.d[0].logit, cum = 0.0f;
    for (auto & t : c.d) { t.p = expf(t.logit - max_l); cum += t.p; }
    for (auto & t : c.d) t.p /= cum;
}

static void top_k(cands & c, int k, size_t min_keep) {
    if (k <= 0) k = c.d.size();
    k = std::max(k, (int) min_keep);
    k = std::min(k, (int) c.d.size());
    if (!c.sorted) {
        auto comp = [](const tok & a, const tok & b) { return a.logit > b.logit; };
        if (k == (int) c.d.size()) std::sort(c.d.begin(), c.d.end(), comp);
        else std::partial_sort(c.d.begin(), c.d.begin() + k, c.d.end(), comp);
        c.sorted = true;
    }
    c.d.resize(k);
}

static void top_p(cands & c, float p, size_t min_keep) {
    if (p >= 1.0f) return;
    softmax(c);
    float cum = 0.0f; size_t last = c.d.size();
    for (size_t i = 0; i < c.d.size(); ++i) {
        cum += c.d[i].p;
        if (cum >= p && i + 1 >= min_keep) { last = i + 1; break; }
    }
    c.d.resize(last);
}

static void min_p(cands & c, float p, size_t min_keep) {
    if (p <= 0.0f || c.d.empty()) return;
    bool applied = false;
    if (!c.sorted) {
        std::vector<tok> kept;
        float max_logit = -3.4e38f;
        for (auto & t : c.d) max_logit = std::max(max_logit, t.logit);
        const float min_logit = max_logit + logf(p);
        for (auto & t : c.d) if (t.logit >= min_logit) kept.push_back(t);
        if (kept.size() >= min_keep) { c.d = kept; applied = true; }
    }
    if (!applied) {
        softmax(c);
        const float min_logit = c.d[0].logit + logf(p);
        size_t i = 1;
        for (; i < c.d.size(); ++i) if (c.d[i].logit < min_logit && i >= min_keep) break;
        c.d.resize(i);
    }
}

static void tail_free(cands & c, float z, size_t min_keep) {
    if (z >= 1.0f || c.d.size() <= 2) return;
    softmax(c);
    std::vector<float> d1(c.d.size() - 1), d2(c.d.size() - 2);
    for (size_t i = 0; i < d1.size(); ++i) d1[i] = c.d[i].p - c.d[i + 1].p;
    for (size_t i = 0; i < d2.size(); ++i) d2[i] = std::abs(d1[i] - d1[i + 1]);
    const float sum = std::accumulate(d2.begin(), d2.end(), 0.0f);
    if (sum > 1e-6f) for (float & v : d2) v /= sum;
    else for (float & v : d2) v = 1.0f / d2.size();
    float cum = 0.0f; size_t last = c.d.size();
    for (size_t i = 0; i < d2.size(); ++i) {
        cum += d2[i];
        if (cum > z && i >= min_keep) { last = i; break; }
    }
    c.d.resize(last);
}

static void typical(cands & c, float p, size_t min_keep) {
    if (p >= 1.0f) return;
    softmax(c);
    float entropy = 0.0f;
    for (auto & t : c.d) entropy += -t.p * logf(t.p);
    std::vector<float> score(c.d.size());
    for (size_t i = 0; i < c.d.size(); ++i) score[i] = fabsf(-logf(c.d[i].p) - entropy);
    std::vector<size_t> idx(c.d.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return score[a] < score[b]; });
    float cum = 0.0f; size_t last = idx.size();
    for (size_t i = 0; i < idx.size(); ++i) {
        cum += c.d[idx[i]].p;
        if (cum > p && i >= min_keep - 1) { last = i + 1; break; }
    }
    std::vector<tok> kept;
    for (size_t i = 0; i < last; ++i) kept.push_back(c.d[idx[i]]);
    c.d = kept; c.sorted = false;
}

static void temp(cands & c, float t) { for (auto & x : c.d) x.logit /= t; }

static int draw(cands & c, std::mt19937 & rng) {
    softmax(c);
    std::vector<float> probs;
    for (auto & t : c.d) probs.push_back(t.p);
    std::discrete_distribution<> dist(probs.begin(), probs.end());
    return c.d[dist(rng)].id;
}

static int find_p(const cands & c, int id, float & p) {
    for (auto & t : c.d) if (t.id == id) { p = t.p; return 1; }
    return 0;
}

int main(int argc, char ** argv) {
    if (argc != 17) { fprintf(stderr, "usage: see header\n"); return 2; }
    FILE * f = fopen(argv[1], "rb");
    std::vector<float> logits;
    float x;
    while (fread(&x, sizeof x, 1, f) == 1) logits.push_back(x);
    fclose(f);
    const unsigned seed = strtoul(argv[2], nullptr, 10);
    const int n_draws = atoi(argv[3]);
    const float t = atof(argv[4]), tp = atof(argv[6]), mp = atof(argv[7]), ty = atof(argv[8]), z = atof(argv[9]);
    const int k = atoi(argv[5]), last_n = atoi(argv[10]), mirostat = atoi(argv[14]);
    const float rep = atof(argv[11]), freq = atof(argv[12]), present = atof(argv[13]);
    const float tau = atof(argv[15]), eta = atof(argv[16]);
    const int n_vocab = logits.size();
    std::mt19937 rng(seed);
    std::vector<int> prev;
    float mu = 2.0f * tau;
    for (int n = 0; n < n_draws; ++n) {
        cands c;
        for (int i = 0; i < n_vocab; ++i) c.d.push_back({i, logits[i], 0.0f});
        const int used = std::min((int) prev.size(), last_n);
        if (used && !(rep == 1.0f && freq == 0.0f && present == 0.0f)) {
            std::unordered_map<int, int> count;
            for (int i = prev.size() - used; i < (int) prev.size(); ++i) count[prev[i]]++;
            for (auto & tk : c.d) {
                auto it = count.find(tk.id);
                if (it == count.end()) continue;
                if (tk.logit <= 0) tk.logit *= rep; else tk.logit /= rep;
                tk.logit -= float(it->second) * freq + float(it->second > 0) * present;
            }
        }
        int id;
        if (mirostat == 2) {
            temp(c, t);
            softmax(c);
            size_t keep = 0;
            while (keep < c.d.size() && !(-log2f(c.d[keep].p) > mu)) ++keep;
            c.d.resize(std::max<size_t>(keep, 1));
            softmax(c);
            id = draw(c, rng);
            float p = 0.0f; find_p(c, id, p);
            mu = mu - eta * (-log2f(p) - tau);
        } else if (mirostat == 1) {
            temp(c, t);
            softmax(c);
            float sum_ti_bi = 0.0, sum_ti_sq = 0.0;
            for (size_t i = 0; i < size_t(100 - 1) && i < c.d.size() - 1; ++i) {
                float t_i = logf(float(i + 2) / float(i + 1));
                float b_i = logf(c.d[i].p / c.d[i + 1].p);
                sum_ti_bi += t_i * b_i;
                sum_ti_sq += t_i * t_i;
            }
            float s_hat = sum_ti_bi / sum_ti_sq, eps = s_hat - 1;
            float kk = powf((eps * powf(2, mu)) / (1 - powf(float(n_vocab), -eps)), 1 / s_hat);
            top_k(c, int(kk), 1);
            id = draw(c, rng);
            float p = 0.0f; find_p(c, id, p);
            mu = mu - eta * (-log2f(p) - tau);
        } else {
            top_k(c, k, 1); tail_free(c, z, 1); typical(c, ty, 1); top_p(c, tp, 1); min_p(c, mp, 1); temp(c, t);
            id = draw(c, rng);
        }
        prev.push_back(id);
        printf("%d\n", id);
    }
    return 0;
}
