/*
 * Hot loop of the exact arena-layout search (see turnipc/layout/canonical.py).
 *
 * An independent implementation of the search described in M. D. Moffitt,
 * "MiniMalloc: A Lightweight Memory Allocator for Hardware-Accelerated Machine
 * Learning", ASPLOS 2023. Plain C with no Python headers: it is built into a
 * shared library at install time and loaded with ctypes, so a machine with only
 * Python and gcc can build it. Every decision depends on the input and a node
 * budget only (no clock), so the answer is the same on every machine.
 *
 * Problem (all in scaled units): n buffers, buffer i needs size[i] bytes, offsets
 * must be multiples of align[i], and it lives over sections [sa[i], sb[i]) of a
 * sweep in which section k holds every buffer live just before the k-th distinct
 * end time (so every section is a maximal set of buffers live together). Two
 * buffers overlap in time exactly when their section ranges intersect.
 *
 * The search places buffers one at a time, each at its lowest offset above the
 * placed buffers it overlaps (canonical solutions), in non-decreasing offset
 * order with ties broken by a static preorder. After each placement:
 *   - min offsets of unplaced overlapping buffers rise to the new top;
 *   - section floors rise to the placed top and to the lowest min offset of the
 *     section's unplaced buffers; floor + unplaced bytes of a section must fit
 *     the capacity (spatial inference);
 *   - a buffer is never placed at or above the lowest top another unplaced
 *     buffer can reach (it would leave a gap that buffer fits in: dominated);
 *   - if the placed buffer touched no unplaced buffer and its subtree failed,
 *     its siblings fail too (hatless pruning);
 *   - when no unplaced buffer crosses a section boundary any more, the
 *     unplaced buffers split into independent windows, each searched on its
 *     own with a fresh preorder.
 * Static preorders (keys such as W width, A area, T largest section total) are
 * tried round-robin under a node limit that doubles each round.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ST_OK 1
#define ST_NOTFOUND 0
#define ST_ABORTED -1
#define ST_NOMEM -2

typedef struct {
    int64_t off;
    int64_t rank;
    int64_t b;
} Ord;

typedef struct {
    int64_t idx;
    int64_t old;
} Change;

typedef struct {
    int64_t n, nsec, cap;
    const int64_t *size, *align, *sa, *sb, *lower, *upper;
    /* overlaps (CSR) and section members (CSR) */
    int64_t *ov_ptr, *sm_ptr;
    int32_t *ov_idx, *sm_idx;
    int64_t *rank; /* preorder index of each buffer in its current partition */
    int ranked;    /* rank holds a preorder (set by an enclosing window) */
    /* state */
    int64_t *assign, *solution, *minoff, *floor_, *total, *cuts;
    /* undo stacks */
    Change *och; int64_t och_len, och_cap;
    Change *sch; int64_t sch_len, sch_cap;
    /* affected-section marks */
    /* preorder keys scratch */
    const char *heur; int heur_len;
    int64_t nodes_remaining;
    int64_t ticks, tick_budget; /* deterministic work: inner-loop steps */
    int64_t nodes_used;
    int64_t backtracks;
    int nomem;
} Solver;

typedef struct {
    int64_t area, lower, overlaps, sections, size, total, upper, width, idx;
} Pre;

static const char *g_heur;
static int g_heur_len;

static int cmp_pre(const void *pa, const void *pb) {
    const Pre *a = (const Pre *)pa, *b = (const Pre *)pb;
    for (int k = 0; k < g_heur_len; k++) {
        int64_t x = 0, y = 0;
        switch (g_heur[k]) {
            case 'A': x = a->area; y = b->area; break;
            case 'C': x = a->sections; y = b->sections; break;
            case 'L': x = a->lower; y = b->lower; break;
            case 'O': x = a->overlaps; y = b->overlaps; break;
            case 'T': x = a->total; y = b->total; break;
            case 'U': x = a->upper; y = b->upper; break;
            case 'W': x = a->width; y = b->width; break;
            case 'Z': x = a->size; y = b->size; break;
            default: continue;
        }
        if (x != y) return x > y ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : (a->idx > b->idx ? 1 : 0);
}

static int cmp_ord(const void *pa, const void *pb) {
    const Ord *a = (const Ord *)pa, *b = (const Ord *)pb;
    if (a->off != b->off) return a->off < b->off ? -1 : 1;
    return a->rank < b->rank ? -1 : (a->rank > b->rank ? 1 : 0);
}

static void sift_down(Ord *h, int64_t n, int64_t k) {
    for (;;) {
        int64_t l = 2 * k + 1, m = k;
        if (l < n && cmp_ord(&h[l], &h[m]) < 0) m = l;
        if (l + 1 < n && cmp_ord(&h[l + 1], &h[m]) < 0) m = l + 1;
        if (m == k) return;
        Ord t = h[k]; h[k] = h[m]; h[m] = t;
        k = m;
    }
}

static int push_change(Change **arr, int64_t *len, int64_t *cap, int64_t idx, int64_t old) {
    if (*len == *cap) {
        int64_t nc = *cap ? *cap * 2 : 1024;
        Change *p = (Change *)realloc(*arr, (size_t)nc * sizeof(Change));
        if (!p) return 0;
        *arr = p;
        *cap = nc;
    }
    (*arr)[*len].idx = idx;
    (*arr)[*len].old = old;
    (*len)++;
    return 1;
}

/* A partition: buffers (ids), section range [lo, hi). */
typedef struct {
    const int64_t *bufs;
    int64_t nb;
    int64_t lo, hi;
} Part;

static int sub_solve(Solver *S, const Part *p);

static int search(Solver *S, const Part *p, int64_t min_offset, int64_t min_rank);

/* Spatial inference: in every section of the window, the floor (raised to the
 * current offset: later buffers go no lower) plus the unplaced bytes must fit. */
static int check(Solver *S, const Part *p, int64_t offset) {
    const int64_t *fl = S->floor_, *tot = S->total;
    const int64_t cap = S->cap;
    for (int64_t s = p->lo; s < p->hi; s++) {
        int64_t f = fl[s] < offset ? offset : fl[s];
        if (f + tot[s] > cap) return 0;
    }
    return 1;
}

static int decompose(Solver *S, const Part *p, int64_t min_offset, int64_t min_rank, int64_t b) {
    S->solution[b] = S->assign[b];
    int64_t lo = S->sa[b], hi = S->sb[b];
    int64_t ncut = 0;
    for (int64_t s = lo; s + 1 < hi; s++) {
        if (--S->cuts[s] == 0) ncut++;
    }
    int st;
    if (ncut == 0) {
        st = search(S, p, min_offset, min_rank);
    } else {
        int64_t *cutpoints = (int64_t *)malloc((size_t)(ncut + 2) * sizeof(int64_t));
        int64_t *sub = (int64_t *)malloc((size_t)(p->nb > 0 ? p->nb : 1) * sizeof(int64_t));
        if (!cutpoints || !sub) {
            free(cutpoints); free(sub);
            S->nomem = 1;
            st = ST_NOMEM;
        } else {
            int64_t k = 0;
            cutpoints[k++] = p->lo;
            for (int64_t s = lo; s + 1 < hi; s++)
                if (S->cuts[s] == 0) cutpoints[k++] = s + 1;
            cutpoints[k++] = p->hi;
            st = ST_OK;
            for (int64_t c = 1; c < k && st == ST_OK; c++) {
                int64_t rlo = cutpoints[c - 1], rhi = cutpoints[c];
                int64_t m = 0;
                S->ticks += p->nb;
                for (int64_t j = 0; j < p->nb; j++) {
                    int64_t o = p->bufs[j];
                    if (S->assign[o] >= 0) continue;
                    if (!(S->sb[o] <= rlo || rhi <= S->sa[o])) sub[m++] = o;
                }
                if (m == 0) continue;
                Part q = {sub, m, rlo, rhi};
                st = sub_solve(S, &q);
            }
            free(sub);
            free(cutpoints);
        }
    }
    for (int64_t s = lo; s + 1 < hi; s++) S->cuts[s]++;
    return st;
}

/* Raise section floors to the lowest min offset of their unplaced buffers, for
 * the sections [lo, hi). Bounded work per placement (member visits), so
 * that huge sections do not make every node cost O(members); stopping early only
 * weakens the bound, never the correctness, and depends on the input alone. */
#define FLOOR_WORK_LIMIT (1 << 14)

static void raise_floors(Solver *S, int64_t lo, int64_t hi) {
    int64_t work = 0;
    for (int64_t s = lo; s < hi && !S->nomem; s++) {
        work += S->sm_ptr[s + 1] - S->sm_ptr[s];
        if (work > FLOOR_WORK_LIMIT) break;
        S->ticks += S->sm_ptr[s + 1] - S->sm_ptr[s];
        int64_t mo = INT64_MAX, fl = S->floor_[s];
        for (int64_t e = S->sm_ptr[s]; e < S->sm_ptr[s + 1]; e++) {
            int64_t o = S->sm_idx[e];
            if (S->assign[o] < 0 && S->minoff[o] < mo) {
                mo = S->minoff[o];
                if (mo <= fl) break; /* the floor cannot rise: stop looking */
            }
        }
        if (mo != INT64_MAX && S->floor_[s] < mo) {
            if (!push_change(&S->sch, &S->sch_len, &S->sch_cap, s, S->floor_[s])) { S->nomem = 1; break; }
            S->floor_[s] = mo;
        }
    }
}

static int search(Solver *S, const Part *p, int64_t min_offset, int64_t min_rank) {
    if (S->nodes_remaining <= 0 || S->ticks > S->tick_budget) return ST_ABORTED;
    S->nodes_remaining--;
    S->ticks += 2 * p->nb;
    S->nodes_used++;
    /* unplaced buffers of the window: lowest reachable top, then the candidates
     * (min offset below that top, canonical order after the last placement) */
    int64_t min_height = INT64_MAX, nun = 0;
    for (int64_t j = 0; j < p->nb; j++) {
        int64_t b = p->bufs[j];
        if (S->assign[b] >= 0) continue;
        nun++;
        int64_t h = S->minoff[b] + S->size[b];
        if (h < min_height) min_height = h;
    }
    if (nun == 0) {
        for (int64_t j = 0; j < p->nb; j++) S->solution[p->bufs[j]] = S->assign[p->bufs[j]];
        return ST_OK;
    }
    Ord *ord = (Ord *)malloc((size_t)nun * sizeof(Ord));
    if (!ord) { S->nomem = 1; return ST_NOMEM; }
    int64_t no = 0;
    for (int64_t j = 0; j < p->nb; j++) {
        int64_t b = p->bufs[j];
        if (S->assign[b] >= 0) continue;
        int64_t off = S->minoff[b], r = S->rank[b];
        if (off >= min_height) continue;                            /* dominated: leaves a gap */
        if (off < min_offset || (off == min_offset && r < min_rank)) continue;  /* not canonical */
        ord[no].off = off;
        ord[no].rank = r;
        ord[no].b = b;
        no++;
    }
    /* a heap, not a sort: most nodes try one or two candidates out of thousands */
    for (int64_t k = no / 2 - 1; k >= 0; k--) sift_down(ord, no, k);
    int64_t heap_n = no;
    S->ticks += no;
    /* Placing any buffer at offset o leaves floor + unplaced bytes of a section at
     * least o + total (in the buffer's own sections the floor becomes o + size and
     * the total drops by size), so no candidate above cap - (largest section total
     * of the window) can pass check(): candidates come in offset order, stop there. */
    int64_t max_total = 0;
    for (int64_t s = p->lo; s < p->hi; s++)
        if (S->total[s] > max_total) max_total = S->total[s];
    S->ticks += p->hi - p->lo;
    int result = ST_NOTFOUND;
    while (heap_n > 0) {
        int64_t offset = ord[0].off, b = ord[0].b;
        if (offset + max_total > S->cap) break;
        S->ticks += (S->ov_ptr[b + 1] - S->ov_ptr[b]) + 3 * (S->sb[b] - S->sa[b]) + (p->hi - p->lo) + 16;
        ord[0] = ord[--heap_n];
        sift_down(ord, heap_n, 0);
        S->assign[b] = offset;
        int hatless = 1;
        int64_t och_mark = S->och_len, sch_mark = S->sch_len;
        int64_t top = offset + S->size[b];
        /* every raised buffer overlaps b, so with b's own sections their sections
         * form one contiguous range */
        int64_t aff_lo = S->sa[b], aff_hi = S->sb[b];
        int raised = 0;
        /* raise min offsets of unplaced overlapping buffers */
        for (int64_t e = S->ov_ptr[b]; e < S->ov_ptr[b + 1]; e++) {
            int64_t o = S->ov_idx[e];
            if (S->assign[o] >= 0) continue;
            hatless = 0;
            if (S->minoff[o] >= top) continue;
            if (!push_change(&S->och, &S->och_len, &S->och_cap, o, S->minoff[o])) { S->nomem = 1; break; }
            int64_t h = top, al = S->align[o];
            if (al > 1) { int64_t d = h % al; if (d) h += al - d; }
            S->minoff[o] = h;
            if (S->sa[o] < aff_lo) aff_lo = S->sa[o];
            if (S->sb[o] > aff_hi) aff_hi = S->sb[o];
            raised = 1;
        }
        /* sections of b: floor to its top, drop its bytes */
        for (int64_t s = S->sa[b]; s < S->sb[b] && !S->nomem; s++) {
            if (!push_change(&S->sch, &S->sch_len, &S->sch_cap, s, S->floor_[s])) { S->nomem = 1; break; }
            S->floor_[s] = top;
            S->total[s] -= S->size[b];
        }
        if (raised) raise_floors(S, aff_lo, aff_hi);
        int st = ST_NOTFOUND;
        if (S->nomem) st = ST_NOMEM;
        else if (check(S, p, offset)) st = decompose(S, p, offset, S->rank[b], b);
        /* undo */
        while (S->sch_len > sch_mark) { S->sch_len--; S->floor_[S->sch[S->sch_len].idx] = S->sch[S->sch_len].old; }
        for (int64_t s = S->sa[b]; s < S->sb[b]; s++) S->total[s] += S->size[b];
        while (S->och_len > och_mark) { S->och_len--; S->minoff[S->och[S->och_len].idx] = S->och[S->och_len].old; }
        S->assign[b] = -1;
        if (st != ST_NOTFOUND) { result = st; break; }
        if (hatless) break; /* it touched nothing unplaced: its siblings fail the same way */
    }
    if (result == ST_NOTFOUND) S->backtracks++;
    free(ord);
    return result;
}

/* Search one window with a fresh static preorder (keys use the current section
 * totals). Computing the keys visits every section of every buffer, so a window
 * with more than PREORDER_WORK_LIMIT memberships keeps the preorder it inherited
 * (any fixed order keeps the search complete; this one only breaks ties). */
#define PREORDER_WORK_LIMIT (1 << 20)

static int sub_solve(Solver *S, const Part *p) {
    int64_t members = 0;
    for (int64_t j = 0; j < p->nb; j++) members += S->sb[p->bufs[j]] - S->sa[p->bufs[j]];
    S->ticks += p->nb;
    if (members > PREORDER_WORK_LIMIT && S->ranked) return search(S, p, 0, -1);
    Pre *pre = (Pre *)malloc((size_t)(p->nb > 0 ? p->nb : 1) * sizeof(Pre));
    int64_t *saved = (int64_t *)malloc((size_t)(p->nb > 0 ? p->nb : 1) * sizeof(int64_t));
    if (!pre || !saved) { free(pre); free(saved); S->nomem = 1; return ST_NOMEM; }
    for (int64_t j = 0; j < p->nb; j++) {
        int64_t b = p->bufs[j];
        int64_t tot = 0;
        for (int64_t s = S->sa[b]; s < S->sb[b]; s++) if (S->total[s] > tot) tot = S->total[s];
        int64_t width = S->upper[b] - S->lower[b];
        pre[j].area = S->size[b] * width;
        pre[j].lower = S->lower[b];
        pre[j].overlaps = S->ov_ptr[b + 1] - S->ov_ptr[b];
        pre[j].sections = S->sb[b] - S->sa[b];
        pre[j].size = S->size[b];
        pre[j].total = tot;
        pre[j].upper = S->upper[b];
        pre[j].width = width;
        pre[j].idx = b;
        saved[j] = S->rank[b];
    }
    g_heur = S->heur;
    g_heur_len = S->heur_len;
    qsort(pre, (size_t)p->nb, sizeof(Pre), cmp_pre);
    S->ticks += members + 8 * p->nb;
    for (int64_t j = 0; j < p->nb; j++) S->rank[pre[j].idx] = j;
    int was_ranked = S->ranked;
    S->ranked = 1;
    int st = search(S, p, 0, 0);
    S->ranked = was_ranked;
    for (int64_t j = 0; j < p->nb; j++) S->rank[p->bufs[j]] = saved[j];
    free(pre);
    free(saved);
    return st;
}

static int64_t cmp_sa_key(const int64_t *sa, int64_t a, int64_t b) {
    if (sa[a] != sa[b]) return sa[a] < sa[b] ? -1 : 1;
    return a < b ? -1 : (a > b ? 1 : 0);
}

static const int64_t *g_sa;
static int cmp_by_sa(const void *x, const void *y) {
    return (int)cmp_sa_key(g_sa, *(const int64_t *)x, *(const int64_t *)y);
}

/* The sweep's own partitions: windows of sections that no buffer crosses.
 * by_start: buffer ids sorted by first section. */
static int solve_windows(Solver *S, const int64_t *by_start) {
    int64_t lo = 0, first = 0;
    int st = ST_OK;
    for (int64_t s = 0; s < S->nsec && st == ST_OK; s++) {
        if (s + 1 < S->nsec && S->cuts[s] > 0) continue;
        int64_t last = first;
        while (last < S->n && S->sa[by_start[last]] <= s) last++;
        if (last > first) {
            Part p = {by_start + first, last - first, lo, s + 1};
            st = sub_solve(S, &p);
        }
        first = last;
        lo = s + 1;
    }
    return st;
}

/*
 * Decide whether the buffers fit below cap. heuristics: comma-separated preorders
 * tried round-robin under a node limit that doubles each round (starting at 2n).
 * node_budget caps the total nodes over all rounds. Returns 1 found (offsets in
 * out_offset), 0 proven infeasible, -1 node budget spent, -2 out of memory.
 * tick_budget caps the deterministic work (inner-loop steps, counted, never timed).
 * stats[0] = nodes used, stats[1] = backtracks, stats[2] = index of the heuristic
 * that answered (-1 if none), stats[3] = the node limit of that round,
 * stats[4] = ticks used.
 */
int64_t canonical_solve(int64_t n, const int64_t *size, const int64_t *align, const int64_t *lower,
                        const int64_t *upper, const int64_t *sa, const int64_t *sb, int64_t nsec,
                        int64_t cap, const char *heuristics, int64_t node_budget, int64_t tick_budget,
                        int64_t *out_offset, int64_t *stats) {
    stats[0] = stats[1] = 0; stats[2] = -1; stats[3] = 0; stats[4] = 0;
    if (n == 0) return ST_OK;
    for (int64_t i = 0; i < n; i++) if (size[i] > cap) return ST_NOTFOUND;
    Solver S;
    memset(&S, 0, sizeof(S));
    S.n = n; S.nsec = nsec; S.cap = cap;
    S.tick_budget = tick_budget;
    S.size = size; S.align = align; S.sa = sa; S.sb = sb; S.lower = lower; S.upper = upper;
    int64_t rc = ST_NOMEM;
    int64_t *order = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    int64_t *all = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    S.ov_ptr = (int64_t *)calloc((size_t)n + 1, sizeof(int64_t));
    S.sm_ptr = (int64_t *)calloc((size_t)nsec + 1, sizeof(int64_t));
    S.assign = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    S.solution = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    S.minoff = (int64_t *)calloc((size_t)n, sizeof(int64_t));
    S.floor_ = (int64_t *)calloc((size_t)nsec + 1, sizeof(int64_t));
    S.total = (int64_t *)calloc((size_t)nsec + 1, sizeof(int64_t));
    S.cuts = (int64_t *)calloc((size_t)nsec + 1, sizeof(int64_t));
    S.rank = (int64_t *)calloc((size_t)n, sizeof(int64_t));
    if (!order || !all || !S.ov_ptr || !S.sm_ptr || !S.assign || !S.solution || !S.minoff || !S.floor_ ||
        !S.total || !S.cuts || !S.rank)
        goto done;
    /* overlaps: buffers sorted by section start; j after i overlaps while sa[j] < sb[i] */
    for (int64_t i = 0; i < n; i++) order[i] = i;
    g_sa = sa;
    qsort(order, (size_t)n, sizeof(int64_t), cmp_by_sa);
    int64_t npairs = 0;
    for (int64_t x = 0; x < n; x++) {
        int64_t i = order[x];
        for (int64_t y = x + 1; y < n && sa[order[y]] < sb[i]; y++) {
            S.ov_ptr[i + 1]++;
            S.ov_ptr[order[y] + 1]++;
            npairs++;
        }
    }
    for (int64_t i = 0; i < n; i++) S.ov_ptr[i + 1] += S.ov_ptr[i];
    S.ov_idx = (int32_t *)malloc((size_t)(2 * npairs + 1) * sizeof(int32_t));
    if (!S.ov_idx) goto done;
    {
        int64_t *fill = (int64_t *)malloc((size_t)n * sizeof(int64_t));
        if (!fill) goto done;
        memcpy(fill, S.ov_ptr, (size_t)n * sizeof(int64_t));
        for (int64_t x = 0; x < n; x++) {
            int64_t i = order[x];
            for (int64_t y = x + 1; y < n && sa[order[y]] < sb[i]; y++) {
                int64_t j = order[y];
                S.ov_idx[fill[i]++] = (int32_t)j;
                S.ov_idx[fill[j]++] = (int32_t)i;
            }
        }
        free(fill);
    }
    /* section members, totals and cut counts */
    int64_t nmem = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t s = sa[i]; s < sb[i]; s++) { S.sm_ptr[s + 1]++; S.total[s] += size[i]; }
        for (int64_t s = sa[i]; s + 1 < sb[i]; s++) S.cuts[s]++;
        nmem += sb[i] - sa[i];
    }
    for (int64_t s = 0; s < nsec; s++) S.sm_ptr[s + 1] += S.sm_ptr[s];
    S.sm_idx = (int32_t *)malloc((size_t)(nmem + 1) * sizeof(int32_t));
    if (!S.sm_idx) goto done;
    {
        int64_t *fill = (int64_t *)malloc(((size_t)nsec + 1) * sizeof(int64_t));
        if (!fill) goto done;
        memcpy(fill, S.sm_ptr, (size_t)nsec * sizeof(int64_t));
        for (int64_t i = 0; i < n; i++)
            for (int64_t s = sa[i]; s < sb[i]; s++) S.sm_idx[fill[s]++] = (int32_t)i;
        free(fill);
    }
    for (int64_t s = 0; s < nsec; s++) if (S.total[s] > cap) { rc = ST_NOTFOUND; goto done; }
    for (int64_t i = 0; i < n; i++) { all[i] = i; S.assign[i] = -1; S.solution[i] = -1; }

    /* heuristics list */
    const char *hs[16];
    int hl[16];
    int nh = 0;
    {
        const char *c = heuristics;
        while (*c && nh < 16) {
            const char *e = c;
            while (*e && *e != ',') e++;
            if (e > c) { hs[nh] = c; hl[nh] = (int)(e - c); nh++; }
            c = *e ? e + 1 : e;
        }
    }
    if (nh == 0) { hs[0] = "WAT"; hl[0] = 3; nh = 1; }
    int64_t limit = n;
    rc = ST_ABORTED;
    int spent = 0;
    while (!spent) {
        limit *= 2;
        for (int h = 0; h < nh; h++) {
            int64_t left = node_budget - S.nodes_used;
            if (left <= 0 || S.ticks > tick_budget) { spent = 1; break; }
            S.nodes_remaining = limit < left ? limit : left;
            S.heur = hs[h];
            S.heur_len = hl[h];
            int st = solve_windows(&S, order);
            if (st == ST_ABORTED) continue;
            rc = st;
            stats[2] = h;
            stats[3] = limit;
            spent = 1;
            break;
        }
    }
    if (rc == ST_OK) memcpy(out_offset, S.solution, (size_t)n * sizeof(int64_t));
done:
    stats[0] = S.nodes_used;
    stats[1] = S.backtracks;
    stats[4] = S.ticks;
    free(order); free(all);
    free(S.ov_ptr); free(S.ov_idx); free(S.sm_ptr); free(S.sm_idx);
    free(S.assign); free(S.solution); free(S.minoff); free(S.floor_); free(S.total); free(S.cuts);
    free(S.rank); free(S.och); free(S.sch);
    return rc;
}

/*
 * Best-fit greedy placement (turnipc/layout/greedy.py, _place), compiled because
 * one pass over 18,692 buffers (idealloc pangu_2.6B) costs seconds in NumPy,
 * one small array call per buffer. Same decisions as the Python loop, so both
 * give the same offsets:
 *   buffers are placed in `order`; a buffer of size 0 or with an empty lifetime
 *   gets offset 0 and is not placed. The placed buffers overlapping it in time,
 *   by offset, leave holes: the hole below the j-th starts at the highest end of
 *   the ones before it (aligned up) and ends at its offset. fit 0 (best): the
 *   smallest hole the buffer fits in, lowest offset on ties; tie 1
 *   (earliest_freed): among those smallest holes, the one whose latest earlier
 *   occupant (a placed buffer ending at or before this buffer's lower that
 *   shares a byte with [start, start + size)) ended earliest (none: -1), then
 *   the lowest offset; fit 1 (first): the lowest hole it fits in. No hole: on
 *   top of them (highest end, aligned up).
 * Placed buffers are kept sorted by offset (insertion), so each placement is one
 * linear scan with no sort; offset ties among overlapping buffers cannot change
 * the holes (a later tie's hole starts above its own offset).
 * Returns the arena (highest end); stops once it exceeds `limit` (limit >= 0).
 * out_off must hold n_all entries; entries of buffers not reached stay 0.
 */
typedef struct {
    int64_t po, pe, pl, pu;
} Placed;

/* Placed buffers sorted by offset, in blocks of at most 2 * GREEDY_BLOCK entries
 * (an unrolled list): an insertion moves at most one block, and a block none of
 * whose buffers is live during [l, u) (by its lowest lower and highest upper) is
 * skipped whole. */
#define GREEDY_BLOCK 16

typedef struct {
    int64_t n, minl, maxu;
    Placed *e;
} Block;

static void block_bounds(Block *b) {
    b->minl = INT64_MAX; b->maxu = INT64_MIN;
    for (int64_t j = 0; j < b->n; j++) {
        if (b->e[j].pl < b->minl) b->minl = b->e[j].pl;
        if (b->e[j].pu > b->maxu) b->maxu = b->e[j].pu;
    }
}

int64_t greedy_place(int64_t n_order, const int64_t *order, const int64_t *lower, const int64_t *upper,
                     const int64_t *size, const int64_t *align, int64_t n_all, int64_t tie, int64_t fit,
                     int64_t limit, int64_t *out_off) {
    for (int64_t i = 0; i < n_all; i++) out_off[i] = 0;
    int64_t maxb = n_order / GREEDY_BLOCK + 2;
    Block *B = (Block *)calloc((size_t)maxb, sizeof(Block));
    Placed *pool = (Placed *)malloc((size_t)maxb * 2 * GREEDY_BLOCK * sizeof(Placed));
    int64_t *cs = (int64_t *)malloc((size_t)(n_order + 1) * sizeof(int64_t));
    int64_t arena = 0, nb = 1, used = 1;
    if (!B || !pool || !cs) { arena = -2; goto out; }
    B[0].e = pool; B[0].n = 0; B[0].minl = INT64_MAX; B[0].maxu = INT64_MIN;
    for (int64_t x = 0; x < n_order; x++) {
        int64_t i = order[x];
        int64_t l = lower[i], u = upper[i], s = size[i], a = align[i];
        if (s == 0 || u <= l) { out_off[i] = 0; continue; }
        int64_t ee = 0, any = 0, nc = 0, best_room = INT64_MAX, o = -1;
        for (int64_t bi = 0; bi < nb; bi++) {
            const Block *blk = &B[bi];
            if (blk->minl >= u || blk->maxu <= l) continue;
            for (int64_t j = 0; j < blk->n; j++) {
                const Placed *q = &blk->e[j];
                if (q->pl >= u || q->pu <= l) continue;
                int64_t start = ee;
                if (a > 1) { int64_t d = start % a; if (d) start += a - d; }
                int64_t room = q->po - start;
                if (room >= s) {
                    if (fit == 1) { if (o < 0) o = start; }
                    else if (room < best_room) { best_room = room; nc = 0; cs[nc++] = start; }
                    else if (room == best_room && tie == 1) cs[nc++] = start;
                }
                if (q->pe > ee) ee = q->pe;
                any = 1;
            }
        }
        if (!any) o = 0;
        else if (fit == 1) {
            if (o < 0) { o = ee; if (a > 1) { int64_t d = o % a; if (d) o += a - d; } }
        } else if (nc == 0) {
            o = ee;
            if (a > 1) { int64_t d = o % a; if (d) o += a - d; }
        } else if (tie != 1 || nc == 1) {
            o = cs[0];
        } else {
            int64_t best_freed = INT64_MAX;
            for (int64_t c = 0; c < nc; c++) {
                int64_t h = cs[c], freed = -1;
                for (int64_t bi = 0; bi < nb; bi++) {
                    const Block *blk = &B[bi];
                    if (blk->minl > l) continue; /* every buffer in it starts after l, so ends after l */
                    for (int64_t j = 0; j < blk->n; j++) {
                        const Placed *q = &blk->e[j];
                        if (q->pu <= l && q->po < h + s && q->pe > h && q->pu > freed) freed = q->pu;
                    }
                }
                if (freed < best_freed) { best_freed = freed; o = h; }
            }
        }
        out_off[i] = o;
        /* insert after every placed buffer with offset <= o */
        int64_t bi = 0;
        while (bi + 1 < nb && B[bi].n > 0 && B[bi].e[B[bi].n - 1].po <= o) bi++;
        Block *blk = &B[bi];
        int64_t pos = blk->n;
        while (pos > 0 && blk->e[pos - 1].po > o) pos--;
        memmove(blk->e + pos + 1, blk->e + pos, (size_t)(blk->n - pos) * sizeof(Placed));
        blk->e[pos].po = o; blk->e[pos].pe = o + s; blk->e[pos].pl = l; blk->e[pos].pu = u;
        blk->n++;
        if (l < blk->minl) blk->minl = l;
        if (u > blk->maxu) blk->maxu = u;
        if (blk->n == 2 * GREEDY_BLOCK) {
            /* split: the upper half moves to a fresh block right after this one */
            memmove(B + bi + 2, B + bi + 1, (size_t)(nb - bi - 1) * sizeof(Block));
            Block *nw = &B[bi + 1];
            nw->e = pool + (used++) * 2 * GREEDY_BLOCK;
            nw->n = GREEDY_BLOCK;
            memcpy(nw->e, blk->e + GREEDY_BLOCK, GREEDY_BLOCK * sizeof(Placed));
            blk->n = GREEDY_BLOCK;
            block_bounds(blk);
            block_bounds(nw);
            nb++;
        }
        if (o + s > arena) {
            arena = o + s;
            if (limit >= 0 && arena > limit) break;
        }
    }
out:
    free(B); free(pool); free(cs);
    return arena;
}
