"""Convolution: im2col and col2im, and the Conv2d layer built on them.

**Layout: NHWC, channels last.** A batch of images is (N, H, W, C). With channels last, im2col's
columns are a (N·H·W, k·k·C) matrix whose rows are the patches, and one product with the
(k·k·C, F) weight gives (N·H·W, F): that already *is* the NHWC output, and its gradient is already
the layout the backward product needs. In NCHW (PyTorch's layout) the product's result has to be
transposed into place on every forward, and the gradient back out of it on every backward. A
Fashion-MNIST row of 784 pixels reshapes to (28, 28, 1) for free, and a flattened NHWC map is a
plain reshape too.

**im2col, never a loop over pixels or images.** The columns are the k·k shifted slices of the
zero-padded input, one per kernel offset (Chainer's ``im2col_cpu`` loops over them). Here NumPy's
``sliding_window_view`` names all k·k slices at once as a view, and one copy writes the columns: a
single call, whose inner loop moves k·C contiguous values at a time (four times faster than nine
assignments of C values each). Each pass of a convolution is then one BLAS product (forward) or two
(backward: the weight's gradient and the input's).

**The input's gradient is a convolution too.** col2im, the adjoint of im2col, adds each column back
where it came from: nine overlapping additions. Equivalently, the input's gradient is the output's
gradient, zero-padded, convolved with the kernel turned 180° and its input and output channels
swapped. That is im2col of the gradient and one product, which is what ``backward`` does; ``col2im``
is kept below for reading, and the tests check the two agree. Where pooling follows, the image's
sides are even and ``backward`` computes 2×2 blocks of the input's gradient at once, from
(k+1)×(k+1) patches: more multiplications, but a wider product and fewer values to copy, which
is faster here (``Conv2d._input_grad_by_blocks``).

**Quarters: a convolution that 2×2 pooling follows writes its output in the order pooling reads.**
Pooling in place takes each window's four pixels from four strided views of the map, and NumPy's
ufuncs run two to three times slower on those than on contiguous arrays. But the order of the rows of
im2col's product is ours to choose. With ``quarters`` set (``Network`` sets it on every convolution
that pooling follows), the columns, and so the output, are ordered pixel (2y+dy, 2x+dx) by
quarter (dy, dx) first: the output is (4, N, H/2, W/2, F), four contiguous quarter-size maps, and
each step of pooling is one ufunc over two of them. Its backward hands the gradient back in the same
order, which the weight's gradient, a sum over rows, does not mind; only the input's gradient puts
the four quarters back in place, as it pads them. Measured on the cnn preset's first pooling
(128 images of 28×28×32): 2.6 ms forward and 3.0 backward, against 8.4 and 7.2 in place.

**Chunks: a large training batch is convolved 32 images at a time.** Learning from the hardest third
scores 384 images a step; their columns would be 87 MB for the cnn preset's second convolution, written
to memory by im2col and read back by the product. A chunk's stay in the cache between the two, and the
columns are then kept only for the images that the step learns from (``Conv2d._convolve_in_chunks``):
the resnet preset's training step, 2 to 5% faster (docs/speed.md).

Each layer follows layer.py's contract: ``forward`` caches what ``backward`` needs, ``backward``
returns dLoss/dInput and fills its parameters' gradients, ``keep_rows`` narrows the cache to some
images of the batch. In training, outputs live in arrays the layer reuses from step to step.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .halves import batch_rows, halves
from .layer import Builder, Record, Weighted, flag, init_of, initial_weight, positive
from .plan import Plan, add_bias

WHOLE = 128  # a training batch of at most this many images is convolved whole, its columns kept
CHUNK = 32  # a larger one this many images at a time (Conv2d._convolve_in_chunks)


def im2col(
    padded: np.ndarray,
    k: int,
    out: np.ndarray | None = None,
    quarters: bool = False,
    offsets_first: bool = False,
) -> np.ndarray:
    """The k×k patches of a zero-padded (N, H+k-1, W+k-1, C) batch as (N, H, W, k, k, C): row
    (n, y, x) of the columns holds the patch whose top-left corner is padded[n, y, x].

    ``quarters`` (H and W even): the pixels ordered (2, 2, N, H/2, W/2) instead, pixel (dy, dx, n,
    y, x) being (2y+dy, 2x+dx), the order 2×2 pooling reads (see the docstring above).
    ``offsets_first``: the patch's axes (k, k, C) first and the pixels' last, the transpose, which
    copies faster where C is 1 (see ``Conv2d``).
    """
    windows = _windows(padded, k)  # (N, H, W, C, k, k), a view
    n, h, w, c = windows.shape[:4]
    if quarters:
        if h % 2 or w % 2:
            raise ValueError(f"quarters need an even height and width, got {h}x{w}")
        # Split H into (H/2, dy) and W into (W/2, dx), still a view, then bring dy and dx first.
        windows = windows.reshape(n, h // 2, 2, w // 2, 2, c, k, k).transpose(2, 4, 0, 1, 3, 5, 6, 7)
    pixels = tuple(range(windows.ndim - 3))
    patch = (windows.ndim - 2, windows.ndim - 1, windows.ndim - 3)  # (k, k, C)
    windows = windows.transpose(patch + pixels if offsets_first else pixels + patch)
    if out is None:
        return windows.copy()
    np.copyto(out, windows)
    return out


def _windows(padded: np.ndarray, k: int, stride: int = 1) -> np.ndarray:
    """``sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::stride, ::stride]``: (N, H', W', C,
    k, k), a view. For a contiguous array it is built directly from the strides, which costs about
    1 µs against 27 for NumPy's general function: at batch 1 that is a tenth of a convolution."""
    if not padded.flags.c_contiguous:
        return sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    n, h, w, c = padded.shape
    s = padded.strides
    shape = (n, (h - k) // stride + 1, (w - k) // stride + 1, c, k, k)
    return np.ndarray(shape, padded.dtype, padded, 0, (s[0], stride * s[1], stride * s[2], s[3], s[1], s[2]))


def images_axis(quarters: bool, offsets_first: bool) -> int:
    """The images' axis of im2col's columns in a layout: after (k, k, C) if those come first, after
    (2, 2) in quarters."""
    return (3 if offsets_first else 0) + (2 if quarters else 0)


def col2im(cols: np.ndarray) -> np.ndarray:
    """The adjoint of im2col: each patch added back where it came from, (N, H, W, k, k, C) to the
    padded (N, H+k-1, W+k-1, C). A loop over the kernel's offsets, never over pixels."""
    n, h, w, k, _, c = cols.shape
    padded = np.zeros((n, h + k - 1, w + k - 1, c), cols.dtype)
    for dy in range(k):
        for dx in range(k):
            padded[:, dy : dy + h, dx : dx + w, :] += cols[:, :, :, dy, dx, :]
    return padded


class Conv2d(Weighted):
    """A k×k convolution (k odd), stride 1, zero padding of (k-1)/2 so that the output keeps the
    input's height and width. Input (N, H, W, C), output (N, H, W, F).

    The weight is (k, k, C, F), used as the (k·k·C, F) matrix of im2col's product, and drawn as
    ``init`` says (layer.py's ``initial_weight``, with k·k·C inputs to each output): by default from
    N(0, 2 / (k·k·C)) (He, for the ReLU that follows). ``bias=False`` where batch norm follows: its
    shift makes a bias redundant.

    With one input channel (a grayscale image), the columns are stored transposed, (k·k, pixels),
    and the product reads them as the transpose of that: each of the k·k rows is one shifted copy
    of the images, which NumPy copies faster than k·k-value patches one pixel at a time (for the
    cnn preset's first convolution, 384 images: 8.4 ms against 13.3, the product included).

    Record: ``{"kind": "conv", "out": F, "kernel": k, "bias": true, "init": "he"}``.
    """

    kind: ClassVar[str] = "conv"
    answer_rows: ClassVar[int] = 128  # its columns are k·k times its input (Network.chunk)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        rng: np.random.Generator,
        *,
        bias: bool = True,
        init: str = "he",
        name: str = "conv",
        dtype: type = np.float32,
        needs_input_grad: bool = True,
    ) -> None:
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"the kernel size must be odd (it keeps the image's size), got {kernel}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got {in_channels} in and {out_channels} out")
        self.kernel = int(kernel)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        shape = (kernel, kernel, in_channels, out_channels)
        weight = initial_weight(
            init, shape, kernel * kernel * in_channels, kernel * kernel * out_channels, rng
        )
        self.init = init
        zeros = np.zeros(out_channels, dtype=dtype)
        super().__init__(name, weight.astype(dtype), zeros if bias else None, needs_input_grad)
        # Output (4, N, H/2, W/2, F) in the order 2x2 pooling reads (the module's docstring); the
        # network sets it where pooling follows.
        self.quarters = False
        self._offsets_first = self.in_channels == 1  # the columns' layout (see above)
        self._cols: np.ndarray | None = None  # the last forward's patches, in im2col's layout
        self._padded: np.ndarray | None = None  # or its padded input, if it convolved in chunks

    @classmethod
    def build(cls, record: Record, builder: Builder) -> Conv2d:
        if len(builder.shape) != 3:
            raise ValueError("a convolution needs images: put an 'image' record first")
        out, kernel, bias = positive(record, "out"), positive(record, "kernel"), flag(record, "bias", True)
        init, channels = init_of(record), builder.shape[2]
        builder.spend(kernel * kernel * channels * out + out)
        layer = cls(channels, out, kernel, builder.rng, bias=bias, init=init, **builder.weighted("conv"))
        builder.shape = (*builder.shape[:2], out)
        return layer

    def to_record(self) -> Record:
        return {
            "kind": self.kind,
            "out": self.out_channels,
            "kernel": self.kernel,
            "bias": self.bias is not None,
            "init": self.init,
        }

    def describe(self) -> str:
        return f"conv{self.kernel}x{self.kernel}({self.out_channels})"

    def _columns(
        self,
        x: np.ndarray,
        training: bool,
        name: str,
        quarters: bool,
        offsets_first: bool,
        blocks: bool = False,
    ) -> np.ndarray:
        """im2col of x, zero-padded by (k-1)/2, in the layout asked for. x is (N, H, W, C), or
        quarters (4, N, H/2, W/2, C), each put back in its place as it is padded. In training, the
        arrays are the layer's own, the padded one's border zeroed once. Two halves of the batch at
        once (halves.py). ``blocks``: instead, the (k+1)×(k+1) patches of every 2×2 block of pixels,
        (N, H/2, W/2, k+1, k+1, C) (see ``_input_grad_by_blocks``)."""
        padded = self._pad(x, training, f"{name}_padded")
        return self._im2col(padded, training, name, quarters, offsets_first, blocks)

    def _pad(self, x: np.ndarray, training: bool, name: str) -> np.ndarray:
        """x zero-padded by (k-1)/2 on each side, (N, H+k-1, W+k-1, C); x is (N, H, W, C) or
        quarters (4, N, H/2, W/2, C). In training, into the layer's array ``name``, whose border
        is zeroed once."""
        p = self.kernel // 2
        if x.ndim == 5:
            _, n, h2, w2, c = x.shape
            h, w = 2 * h2, 2 * w2
        else:
            n, h, w, c = x.shape
        shape = (n, h + 2 * p, w + 2 * p, c)
        if training:
            fresh = self._buffers.get(name)
            padded = self._buffer(name, shape, x.dtype)
            if padded is not fresh:  # a new array: zero it once, then only its inside is written
                padded.fill(0)
        else:
            padded = np.zeros(shape, x.dtype)

        def part(lo: int, hi: int) -> None:
            inside = padded[lo:hi]
            if x.ndim == 5:
                for q in range(4):
                    dy, dx = divmod(q, 2)
                    inside[:, p + dy : p + h : 2, p + dx : p + w : 2, :] = x[q, lo:hi]
            else:
                inside[:, p : p + h, p : p + w, :] = x[lo:hi]

        halves(part, n, 2 * padded.size)
        return padded

    def _im2col(
        self,
        padded: np.ndarray,
        training: bool,
        name: str,
        quarters: bool,
        offsets_first: bool,
        blocks: bool = False,
    ) -> np.ndarray:
        """im2col of a padded batch (``_pad``), in the layout asked for, into the layer's array
        ``name`` in training; ``_columns`` says what ``blocks`` does."""
        k, dtype = self.kernel, padded.dtype
        n, h, w, c = padded.shape
        h, w = h - k + 1, w - k + 1
        pixels = (2, 2, n, h // 2, w // 2) if quarters else (n, h, w)
        if blocks:
            cols_shape = (n, h // 2, w // 2, k + 1, k + 1, c)
        else:
            cols_shape = (k, k, c, *pixels) if offsets_first else (*pixels, k, k, c)
        cols = self._buffer(name, cols_shape, dtype) if training else np.empty(cols_shape, dtype)
        axis = images_axis(quarters, offsets_first)

        def part(lo: int, hi: int) -> None:
            if blocks:  # the windows' (C, k+1, k+1) turned to (k+1, k+1, C), as im2col does
                windows = _windows(padded[lo:hi], k + 1, stride=2).transpose(0, 1, 2, 4, 5, 3)
                np.copyto(cols[lo:hi], windows)
                return
            im2col(
                padded[lo:hi],
                k,
                out=batch_rows(cols, axis, lo, hi),
                quarters=quarters,
                offsets_first=offsets_first,
            )

        halves(part, n, cols.size)
        return cols

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        out = self.convolve(x, self._matrix(), training)
        if self.bias is not None:
            out += self.bias.value
        return out

    def convolve(self, x: np.ndarray, matrix: np.ndarray, training: bool = False) -> np.ndarray:
        """im2col of x and one product with ``matrix``, (k·k·C, F) like the weight's: the forward
        without the bias, shaped as the layer's output. ``Inference`` calls it with batch norm
        folded into the matrix; at inference every array is a fresh one. A training batch of more
        than ``WHOLE`` images is convolved ``CHUNK`` images at a time (see ``_convolve_in_chunks``)."""
        n, h, w, c = x.shape
        if c != self.in_channels:
            raise ValueError(f"{self.weight.name}: expected {self.in_channels} channels, got {c}")
        f = matrix.shape[1]
        shape = (4, n, h // 2, w // 2, f) if self.quarters else (n, h, w, f)
        if training and n > WHOLE:
            return self._convolve_in_chunks(x, matrix, shape)
        cols = self._columns(x, training, "cols", self.quarters, self._offsets_first)
        self._cols, self._padded = (cols if training else None), None
        out = self._buffer("out", (n * h * w, f), x.dtype) if training else None
        out = np.matmul(self._patches(cols), matrix, out=out)
        return out.reshape(shape)

    def _convolve_in_chunks(self, x: np.ndarray, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The forward of a large training batch, ``CHUNK`` images at a time: each chunk's columns
        (7.2 MB for 32 maps of 14×14×32) are still in the processor's last-level cache when the
        product reads them, where a whole batch's (87 MB for 384) go out to memory and come back.
        Learning from the hardest third scores 384 images a step and keeps 128, so no chunk's
        columns are kept: ``keep_rows`` makes the kept images' from the padded input, which costs
        what gathering them would, and ``backward`` makes all of them if no ``keep_rows`` came.
        Only the product's rows are split, but OpenBLAS may sum a smaller product in another order:
        the outputs agree with the whole product's to float32's rounding, not always bit for bit."""
        n, f = len(x), shape[-1]
        padded = self._padded = self._pad(x, True, "cols_padded")
        self._cols = None
        out = self._buffer("out", shape, x.dtype)
        for lo in range(0, n, CHUNK):
            hi = min(lo + CHUNK, n)
            # A last, shorter chunk takes a fresh array: the layer's own keeps its shape.
            cols = self._im2col(
                padded[lo:hi], hi - lo == CHUNK, "chunk_cols", self.quarters, self._offsets_first
            )
            patches = self._patches(cols)  # (pixels, k·k·C)
            if self.quarters:  # (4, images, H/2 · W/2) pixels: one product per quarter
                rows = out[:, lo:hi].reshape(4, -1, f)
                np.matmul(patches.reshape(4, -1, patches.shape[1]), matrix, out=rows)
            else:
                np.matmul(patches, matrix, out=out[lo:hi].reshape(-1, f))
        return out

    def _keep_columns_of(self, padded: np.ndarray) -> None:
        """After a forward in chunks: the columns backward needs, those of ``padded`` images."""
        self._cols = self._im2col(padded, True, "cols", self.quarters, self._offsets_first)
        self._padded = None

    def _matrix(self) -> np.ndarray:
        return self.weight.value.reshape(-1, self.out_channels)

    def _patches(self, cols: np.ndarray) -> np.ndarray:
        """im2col's columns as the (pixels, k·k·C) matrix of the product: a view in either layout."""
        depth = self.kernel * self.kernel * self.in_channels
        return cols.reshape(depth, -1).T if self._offsets_first else cols.reshape(-1, depth)

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        if self._padded is not None:  # convolved in chunks, every image kept: its columns made now
            self._keep_columns_of(self._padded)
        assert self._cols is not None, "backward() called before a training forward()"
        k, c, f = self.kernel, self.in_channels, self.out_channels
        if self.quarters:  # grad is (4, N, H/2, W/2, F), in the columns' order
            n, h, w = grad.shape[1], 2 * grad.shape[2], 2 * grad.shape[3]
        else:
            n, h, w = grad.shape[:3]
        rows = grad.reshape(n * h * w, f)
        weight_grad = self.weight.grad.reshape(-1, f)
        if self._offsets_first:  # the columns stored (k·k, pixels): their product as they lie
            np.matmul(self._patches(self._cols).T, rows, out=weight_grad)
        else:  # (pixels, k·k·C): the transposed product is faster (the cnn preset's conv2: 6.9 ms, not 7.3)
            np.copyto(weight_grad, np.matmul(rows.T, self._patches(self._cols)).T)
        if self.bias is not None:
            self._column_sums(rows, self.bias.grad)
        if not self.needs_input_grad:
            return None
        if self.quarters:
            return self._input_grad_by_blocks(grad, n, h, w)
        # The input's gradient: the output's gradient convolved with the kernel turned 180 degrees,
        # its channels swapped: (k, k, F, C). The same as col2im(rows @ W.T), in one product.
        turned = self.weight.value[::-1, ::-1].transpose(0, 1, 3, 2).reshape(k * k * f, c)
        grad_cols = self._columns(
            grad.reshape(n, h, w, f), True, "grad_cols", quarters=False, offsets_first=False
        )
        grad_in = self._buffer("grad_in", (n * h * w, c), grad.dtype)
        np.matmul(grad_cols.reshape(n * h * w, k * k * f), turned, out=grad_in)
        return grad_in.reshape(n, h, w, c)

    def _input_grad_by_blocks(self, grad: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
        """The input's gradient, as above, but for 2×2 blocks of input pixels at a time: H and W are
        even here (pooling follows). Input pixel (2y+py, 2x+px) takes the turned kernel's product
        with the k×k patch of the padded gradient at (2y+py, 2x+px); the four pixels of a block
        together read one (k+1)×(k+1) patch at (2y, 2x), so one product with a (k+1)·(k+1)·F × 4·C
        matrix, the turned kernel placed four times (shifted by py, px) among zeros, gives all four.

        It does 16/9 the multiplications of the k×k way (k = 3), yet takes less time. The other way's
        product has only C columns, which OpenBLAS runs slowly where C is small: the cnn preset's
        conv2 (C = 32), 25,088×576 by 576×32 at 90 GFLOP/s, 10.2 ms, against 6,272×1,024 by
        1,024×128 at 156 GFLOP/s, 10.5 ms. And its patches are 2.25 times fewer values to copy
        (26 MB against 58; 2.1 ms against 3.9): the whole input gradient, 13.6-13.9 ms against
        14.3-14.8, alternating in one process."""
        k, c, f = self.kernel, self.in_channels, self.out_channels
        turned = self.weight.value[::-1, ::-1].transpose(0, 1, 3, 2)  # (k, k, F, C)
        kernel = self._buffer("block_kernel", (k + 1, k + 1, f, 2, 2, c), grad.dtype)
        kernel.fill(0)
        for py in (0, 1):
            for px in (0, 1):
                kernel[py : py + k, px : px + k, :, py, px, :] = turned
        patches = self._columns(grad, True, "grad_cols", quarters=False, offsets_first=False, blocks=True)
        blocks = self._buffer("grad_blocks", (n * (h // 2) * (w // 2), 4 * c), grad.dtype)
        np.matmul(patches.reshape(len(blocks), -1), kernel.reshape(-1, 4 * c), out=blocks)
        # (N, H/2, W/2, py, px, C) to (N, H/2, py, W/2, px, C), which is (N, H, W, C).
        by_block = blocks.reshape(n, h // 2, w // 2, 2, 2, c)
        grad_in = self._buffer("grad_in_blocks", (n, h // 2, 2, w // 2, 2, c), grad.dtype)
        halves(
            lambda lo, hi: np.copyto(grad_in[lo:hi], by_block[lo:hi].transpose(0, 1, 3, 2, 4, 5)),
            n,
            2 * grad_in.size,
        )
        return grad_in.reshape(n, h, w, c)

    def keep_rows(self, rows: np.ndarray) -> None:
        if self._padded is not None:  # convolved in chunks: the kept images' columns made now
            self._keep_columns_of(self._rows("padded_rows", self._padded, rows))
            return
        assert self._cols is not None, "keep_rows() called before a training forward()"
        self._cols = self._rows(
            "cols_rows", self._cols, rows, axis=images_axis(self.quarters, self._offsets_first)
        )

    def answer(self, i: int, plan: Plan) -> None:
        """im2col and one product with the folded weight; the bias after pooling if that follows."""
        weight, bias = plan.affine(i)
        matrix = weight.reshape(-1, weight.shape[-1])
        plan.batch_major()
        plan.add(lambda x: self.convolve(x, matrix))
        if self.quarters:
            plan.pending = bias
        elif bias.any():
            plan.add(lambda x: add_bias(bias, x))
