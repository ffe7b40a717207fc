"""The model half of the rollout engine (cocos.generation.backends.engine): its weights (the live tensors, or cast,
fused and oneDNN-packed copies kept in step with the model) and its forward passes (batched prefill, one decode step
with the kernel or torch ops).

`ModelRunner` is a mixin of `Engine`, whose __init__ sets what it reads: model, dtype, fuse, _kernel, the model's
dimensions (n_layers, head_dim, n_heads, n_kv, rep, eps) and _sig / _w (None until the first _sync). The engine's
scheduler decides what runs; the runner computes it: `_prefill` (prompts into pool entries -> last logits),
`_layout` (a batch composition -> the decode step's index tensors), `_decode` (one step for every row -> logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cocos.generation.backends.engine_ops import MASKED, linear, linears, pack, rms, rotate_half


@dataclass
class _Layer:
    ln1: torch.Tensor
    ln2: torch.Tensor
    qkv: list  # [(weight, bias)]: one fused projection or three (q, k, v)
    o: tuple
    gate_up: list  # [(weight, bias)]: one fused projection or two (gate, up)
    down: tuple


class ModelRunner:
    """Weights and forward passes of `Engine` (see the module docstring)."""

    # ---------------------------------------------------------------- weights
    def _signature(self):
        return tuple((id(p), p._version, p.data_ptr(), p.dtype) for p in self.model.parameters())

    def refresh(self):
        """Re-read (and re-cast) the model's weights now."""
        self._sig = None
        self._sync()

    def _sync(self):
        sig = self._signature()
        if sig == self._sig:
            return
        dt, inner = self.dtype, self.model.model
        copy = any(p.dtype != dt for p in self.model.parameters())
        fuse = copy if self.fuse is None else self.fuse
        cast = {}

        def c(t):
            if t is None:
                return None
            if t.dtype == dt:
                return t.detach()  # the live tensor itself (shares storage)
            if id(t) not in cast:  # tied weights (embedding = lm_head) are cast once
                cast[id(t)] = (t, t.detach().to(dt))
            return cast[id(t)][1]

        def projs(mods):
            if fuse:
                bias = None
                if any(m.bias is not None for m in mods):
                    bias = torch.cat([m.bias.detach() if m.bias is not None else
                                      torch.zeros(m.out_features, dtype=m.weight.dtype) for m in mods]).to(dt)
                return [(torch.cat([m.weight.detach() for m in mods]).to(dt), bias)]
            return [(c(m.weight), c(m.bias)) for m in mods]

        layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            layers.append(_Layer(
                ln1=c(layer.input_layernorm.weight), ln2=c(layer.post_attention_layernorm.weight),
                qkv=projs([a.q_proj, a.k_proj, a.v_proj]), o=(c(a.o_proj.weight), c(a.o_proj.bias)),
                gate_up=projs([m.gate_proj, m.up_proj]), down=(c(m.down_proj.weight), c(m.down_proj.bias))))
        rope = inner.rotary_emb
        head = (c(self.model.lm_head.weight), c(self.model.lm_head.bias))
        if self._kernel is not None and dt == torch.bfloat16 and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
            # packed copies (re-made whenever the weights change, like the casts above: ~0.2 s for 135M params)
            layers = [_Layer(ln1=ly.ln1, ln2=ly.ln2, qkv=[pack(p) for p in ly.qkv], o=pack(ly.o),
                             gate_up=[pack(p) for p in ly.gate_up], down=pack(ly.down)) for ly in layers]
            head = pack(head)
        self._w = dict(embed=c(inner.embed_tokens.weight), norm=c(inner.norm.weight), head=head, layers=layers,
                       inv_freq=rope.inv_freq.detach().float(), rope_scale=float(rope.attention_scaling))
        self._sig = sig

    def _rope(self, pos):
        # exactly LlamaRotaryEmbedding: fp32 angles, cos/sin cast to the activation dtype
        freqs = pos[:, None].float() * self._w["inv_freq"]
        emb = torch.cat((freqs, freqs), -1)
        return ((emb.cos() * self._w["rope_scale"]).to(self.dtype), (emb.sin() * self._w["rope_scale"]).to(self.dtype))

    # ---------------------------------------------------------------- the decode step's inputs
    def _layout(self, row_group, pool, Lp):
        """Index tensors for a batch composition (rebuilt only when rows join or leave): row_group[b] is the prompt
        group of row b, pool[e] the group in prefix pool entry e, Lp the pool's allocated length."""
        P = len(pool)
        members = [[] for _ in range(P)]
        for b, g in enumerate(row_group):
            members[g.entry].append(b)
        G = max(max((len(m) for m in members), default=1), 1)
        grp = torch.zeros(P, G, dtype=torch.long)
        slot_of = {}
        for e, m in enumerate(members):
            for i, b in enumerate(m):
                grp[e, i] = b
                slot_of[b] = e * G + i
        flat = torch.tensor([slot_of[b] for b in range(len(row_group))], dtype=torch.long)
        pre_len_rows = torch.tensor([len(g.ids) for g in row_group], dtype=torch.long)
        # for the kernel: rows grouped by entry (CSR) and each entry's prompt length
        ent_ptr = torch.tensor([0] + [len(m) for m in members], dtype=torch.long).cumsum(0)
        ent_rows = torch.tensor([b for m in members for b in m], dtype=torch.long)
        entry_len = torch.tensor([len(g.ids) for g in pool], dtype=torch.long)
        pre_mask = torch.zeros(len(row_group), 1, 1, Lp, dtype=torch.float32)
        pre_mask.masked_fill_(torch.arange(Lp)[None, None, None, :] >= pre_len_rows[:, None, None, None], MASKED)
        return dict(grp=grp, flat=flat, pre_mask=pre_mask, pre_len=pre_len_rows, ent_ptr=ent_ptr, ent_rows=ent_rows,
                    entry_len=entry_len)

    # ---------------------------------------------------------------- forward passes
    @torch.inference_mode()
    def _prefill(self, items, k_pre, v_pre):
        """Prefill prompts together: items are (ids, pool entry, cached); each runs tokens ids[cached:] and writes
        their KV into its entry. The linears, norms and MLPs see all prompts' tokens as one matrix (oneDNN is
        ~25% faster per token at a few hundred rows than at one prompt's ~100); attention runs per prompt.
        Returns each prompt's last-position logits [len(items), V]."""
        w, D, H, Hk = self._w, self.head_dim, self.n_heads, self.n_kv
        spans = [(len(ids) - cached, len(ids), cached) for ids, _, cached in items]  # (new tokens T, L, cached)
        x = F.embedding(torch.tensor([t for ids, _, cached in items for t in ids[cached:]]), w["embed"])
        cos, sin = self._rope(torch.cat([torch.arange(cached, L) for _, L, cached in spans]))
        ends = torch.tensor([T for T, _, _ in spans]).cumsum(0)
        # with a cached prefix, query i (absolute position cached+i) sees keys 0..cached+i: one mask per prompt
        masks = [torch.arange(L)[None, :] <= torch.arange(cached, L)[:, None] if cached else None
                 for _, L, cached in spans]
        layers = w["layers"]
        x, h = self._add_norm(x, None, layers[0].ln1)
        for li, ly in enumerate(layers):
            q, k, v = linears(h, ly.qkv).split([H * D, Hk * D, Hk * D], -1)
            q = q.view(-1, H, D).transpose(0, 1)
            k = k.view(-1, Hk, D).transpose(0, 1)
            v = v.view(-1, Hk, D).transpose(0, 1)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            outs, t0 = [], 0
            for (_, entry, _), (T, L, cached), causal in zip(items, spans, masks):
                qi, ki, vi = q[:, t0 : t0 + T], k[:, t0 : t0 + T], v[:, t0 : t0 + T]
                t0 += T
                k_pre[li, entry, :, :, cached:L] = ki.transpose(-1, -2)
                v_pre[li, entry, :, cached:L] = vi
                if cached:
                    # K made contiguous: a transposed view of the cache sends SDPA to its math path (6x slower
                    # for a 700-token cached prefix and 250 new tokens, measured)
                    kk, vv = k_pre[li, entry, ..., :L].transpose(-1, -2).contiguous(), v_pre[li, entry, :, :L]
                    o = F.scaled_dot_product_attention(qi[None], kk[None], vv[None], attn_mask=causal, enable_gqa=True)
                else:  # same call as HF's sdpa path for an unpadded prompt
                    o = F.scaled_dot_product_attention(qi[None], ki[None], vi[None], is_causal=True, enable_gqa=True)
                outs.append(o[0].transpose(0, 1).reshape(T, -1))
            x, h = self._finish_layer(x, torch.cat(outs) if len(outs) > 1 else outs[0], li)
        return linear(h[ends - 1].contiguous(), w["head"]).float()

    def _finish_layer(self, x, attn_out, li):
        """The rest of layer li after attention: output projection, MLP (each with its residual add), and the
        RMSNorm that feeds the next layer (or the final norm). Returns (x, normed x)."""
        layers = self._w["layers"]
        ly = layers[li]
        x, h = self._add_norm(x, linear(attn_out, ly.o), ly.ln2)
        return self._add_norm(x, self._mlp(h, ly), layers[li + 1].ln1 if li + 1 < len(layers) else self._w["norm"])

    def _add_norm(self, x, delta, weight):
        """The residual add (if delta) and the next RMSNorm: (x + delta, its norm). In place under the kernel."""
        if self._kernel is not None:
            return x, self._kernel.add_rms_norm_(x, delta, weight, self.eps)
        if delta is not None:
            x = x + delta
        return x, rms(x, weight, self.eps)

    def _mlp(self, h, ly):
        if self._kernel is not None:
            return linear(self._kernel.silu_mul(linears(h, ly.gate_up)), ly.down)
        g, u = linears(h, ly.gate_up).chunk(2, -1)
        return linear(F.silu(g) * u, ly.down)

    @torch.inference_mode()
    def _decode(self, tok, pos, own_len, st, k_pre, v_pre, k_own, v_own):
        """One decode step for rows 0..B-1: returns fp32 logits [B, V].

        st holds the per-composition index tensors (see _layout).
        """
        w = self._w
        B = tok.shape[0]
        cos, sin = self._rope(pos)
        ctx = dict(st=st, own_len=own_len, cos=cos, sin=sin, B=B)
        x = F.embedding(tok, w["embed"])
        if self._kernel is not None:
            attend = self._attend_kernel
        else:
            attend = self._attend_torch
            self._torch_attention_context(ctx, k_pre, k_own)
        layers = w["layers"]
        x, h = self._add_norm(x, None, layers[0].ln1)
        for li, ly in enumerate(layers):
            o = attend(ctx, linears(h, ly.qkv), k_pre[li], v_pre[li], k_own[li], v_own[li])
            x, h = self._finish_layer(x, o, li)
        return linear(h, w["head"]).float()

    def _attend_kernel(self, ctx, qkv, k_pre, v_pre, k_own, v_own):
        """RoPE, KV write and attention of one layer in the fused kernel (csrc/decode_attention.cpp)."""
        st = ctx["st"]
        return self._kernel.decode_attention(qkv, ctx["cos"], ctx["sin"], k_pre, v_pre, k_own, v_own, st["entry_len"],
                                             ctx["own_len"], st["ent_ptr"], st["ent_rows"], self.n_heads, self.n_kv,
                                             self.head_dim ** -0.5)

    def _torch_attention_context(self, ctx, k_pre, k_own):
        """Masks and write indices shared by the layers of one torch-path decode step."""
        B, own_len, Hk, D = ctx["B"], ctx["own_len"], self.n_kv, self.head_dim
        Lc = k_own.shape[-1]
        own_mask = torch.zeros(B, 1, 1, Lc, dtype=torch.float32)
        own_mask.masked_fill_(torch.arange(Lc)[None, None, None, :] > own_len[:, None, None, None], MASKED)
        ctx["mask"] = torch.cat([ctx["st"]["pre_mask"], own_mask], -1)
        # flat row indices (row, head, own position) for writing this step's K and V vectors
        bh = torch.arange(B)[:, None] * Hk + torch.arange(Hk)[None, :]  # [B, Hk]
        ctx["widx"] = (bh * Lc + own_len[:, None]).reshape(-1)
        ctx["widx_k"] = ((bh[:, :, None] * D + torch.arange(D)) * Lc + own_len[:, None, None]).reshape(-1)
        ctx["cos"], ctx["sin"] = ctx["cos"][:, None, :], ctx["sin"][:, None, :]

    def _attend_torch(self, ctx, qkv, k_pre, v_pre, k_own, v_own):
        """The same step with torch ops: batched matmuls over whole (masked) caches."""
        dt, D, H, Hk, rep, B = self.dtype, self.head_dim, self.n_heads, self.n_kv, self.rep, ctx["B"]
        st = ctx["st"]
        P, G = st["grp"].shape
        Lp = k_pre.shape[-1]
        grp, flat = st["grp"].reshape(-1), st["flat"]
        q, k, v = qkv.split([H * D, Hk * D, Hk * D], -1)
        q = q.view(B, H, D)
        k = k.view(B, Hk, D)
        q = q * ctx["cos"] + rotate_half(q) * ctx["sin"]
        k = k * ctx["cos"] + rotate_half(k) * ctx["sin"]
        k_own.view(-1).index_copy_(0, ctx["widx_k"], k.reshape(-1))
        v_own.view(-1, D).index_copy_(0, ctx["widx"], v.reshape(-1, D))
        q = (q * D ** -0.5).view(B, Hk, rep, D)
        # prefix part: the rows of one pool entry attend to it together
        qg = q[grp].view(P, G, Hk, rep, D).transpose(1, 2).reshape(P, Hk, G * rep, D)
        s_pre = torch.matmul(qg, k_pre[:P])
        s_pre = s_pre.view(P, Hk, G, rep, Lp).transpose(1, 2).reshape(P * G, Hk, rep, Lp)[flat]
        s_own = torch.matmul(q, k_own[:B])
        p = torch.softmax(torch.cat([s_pre, s_own], -1).float() + ctx["mask"], -1).to(dt)
        pg = p[..., :Lp][grp].view(P, G, Hk, rep, Lp).transpose(1, 2).reshape(P, Hk, G * rep, Lp)
        o_pre = torch.matmul(pg, v_pre[:P])
        o_pre = o_pre.view(P, Hk, G, rep, D).transpose(1, 2).reshape(P * G, Hk, rep, D)[flat]
        o = o_pre + torch.matmul(p[..., Lp:], v_own[:B])
        return o.reshape(B, H * D)
