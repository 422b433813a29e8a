"""One BudgetNet artifact as a v2 model: its metadata, and inference requests to runtime calls.

Inputs (exactly one of IMAGE and INPUT; BUDGET and MASK optional):

- IMAGE  UINT8 [-1, H, W, C]  raw pixels, normalised with the manifest's preprocessing
- INPUT  FP32  [-1, C, H, W]  already preprocessed
- BUDGET FP32  [-1]           one budget in [0, 1] per image
- MASK   BOOL  [-1, K]        run exactly these components (no policy)

Outputs: LOGITS FP32 [-1, classes], CLASS INT64 [-1], MASK BOOL [-1, K] (the mask
that ran), PROBS FP32 [-1, K] (the policy's probabilities; with mode "allocate"
and count masks, each kept component's share of the table's rows; absent with a
MASK input), FLOPS INT64 [-1] (executed backbone FLOPs).

Request parameters: `budget` (one budget for every image), `mode` ("greedy",
"sample", "rank" or "allocate"; default: the server's `--mode`, else the mode the
artifact was exported for), `seed` (for "sample"), `cap` ("components" or "flops": the budget
as a hard ceiling) and `policy` ("agent", or "static": the artifact's searched static
mask for the budget; the default is "agent" when the artifact has a policy graph).
Without BUDGET, `budget` or MASK the server's budget controller decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from budget_edge.errors import ConfigError
from budget_edge.runtime.budget import BudgetController
from budget_edge.runtime.manifest import DECISION_MODES
from budget_edge.runtime.request import Agent, InferenceRequest, Mask, decision_from_options
from budget_edge.runtime.runtime import LATENCY_KEYS, BudgetRuntime, InferResult
from budget_edge.serve.admission import Admission
from budget_edge.serve.errors import PayloadTooLargeError, RequestError
from budget_edge.serve.request import InferRequest, RequestedOutput, parse_request
from budget_edge.serve.tensors import Tensor, encode_body, encode_output

IMAGE_INPUTS = ("IMAGE", "INPUT")
# A model name is a path segment of every model URL: letters, digits, '.', '_' and '-',
# starting with a letter, digit or '_' (so never '..'), at most 64 characters. A name
# with '/' or '..' started a server whose model no URL could reach.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
PARAMETERS = ("budget", "mode", "seed", "cap", "policy")


@dataclass(frozen=True)
class TensorMeta:
    """A tensor as model metadata describes it; -1 is the batch axis."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Answer:
    """The response to one request: its body, the JSON header length if the body is
    binary (None: plain JSON), and the number of images answered."""

    content: bytes
    json_length: int | None
    images: int


# Sees each chunk a request runs: the part, its result, the budget the server chose
# (None: the request gave one), seconds waited for the model and seconds it ran.
RunObserver = Callable[[InferenceRequest, InferResult, "float | None", float, float], None]


@dataclass(frozen=True)
class PreparedRequest:
    """A parsed, checked request, ready to run."""

    request: InferRequest
    wanted: list[RequestedOutput]
    inference: InferenceRequest  # budget None: the server's controller gives it


# Images per request: a 21,399-image request once held the model for 45 s while a
# one-image request waited; batches beyond this are the client's to split.
DEFAULT_MAX_BATCH = 64
# Images per model run: a request's batch runs in chunks of this many, each a turn of
# its own in the server's queue, so a one-image request waits for at most one chunk of
# a large batch, and the memory a run takes is bounded by the chunk, not the request.
DEFAULT_CHUNK = 16


class ServedModel:
    """A loaded runtime behind the v2 protocol.

    One request at a time runs the model (like one Triton model instance): a
    TensorRT execution context must not be shared by two threads, the budget
    controllers keep state, and latency fed back to a controller is only
    meaningful when calls do not compete for the cores. Parsing and encoding run
    in parallel, outside the lock.

    Every session of the runtime is made when the model is (`load_sessions`), so the
    artifact directory may be deleted or exported again while it serves. `replace`
    swaps in a reloaded runtime (SIGHUP); a request runs wholly on the runtime it
    began with (`pinned`).
    """

    def __init__(
        self,
        runtime: BudgetRuntime,
        controller: BudgetController,
        name: str | None = None,
        version: str = "1",
        max_batch: int = DEFAULT_MAX_BATCH,
        chunk: int = DEFAULT_CHUNK,
        mode: str | None = None,
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"--max-batch must be at least 1, got {max_batch}")
        if chunk < 1:
            raise ConfigError(f"the chunk size must be at least 1, got {chunk}")
        self.runtime = runtime
        self._mode_option = mode
        self.mode, self.platform, self._default_policy = self._defaults(runtime)
        if self.mode not in DECISION_MODES:
            raise ConfigError(f"--mode must be one of {', '.join(DECISION_MODES)}")
        self.max_batch = max_batch
        self.chunk = chunk
        self.controller = controller
        self.name = check_model_name(name or runtime.manifest.backbone)
        self.version = version
        self.inputs, self.outputs = _signature(runtime)
        self._lock = threading.Lock()  # one run at a time
        self._swap = threading.Lock()  # guards `runtime` and `_users`
        self._users: dict[BudgetRuntime, int] = {}  # requests running on each runtime
        runtime.load_sessions()  # nothing reads the artifact directory after this

    def _defaults(self, runtime: BudgetRuntime) -> tuple[str, str, str]:
        """What `runtime` makes of a request that names no mode or policy, and the
        platform clients see."""
        mode = self._mode_option or runtime.default_mode
        platform = f"budget-edge_{runtime.backend.name}"
        if runtime.precision != "fp32":  # clients see which graph set answers
            platform += f"_{runtime.precision}"
        # An artifact exported without an agent but with static masks still serves budgets.
        policy = "static" if runtime.has_static_masks and not runtime.has_policy else "agent"
        return mode, platform, policy

    @contextlib.contextmanager
    def pinned(self) -> Iterator[BudgetRuntime]:
        """The runtime serving now, kept open until the block ends even if a reload
        replaces it meanwhile: every chunk of a request runs on the same model."""
        with self._swap:
            runtime = self.runtime
            self._users[runtime] = self._users.get(runtime, 0) + 1
        try:
            yield runtime
        finally:
            with self._swap:
                self._users[runtime] -= 1
                retired = self._users[runtime] == 0 and runtime is not self.runtime
                if self._users[runtime] == 0:
                    del self._users[runtime]
            if retired:  # its last request is done: a reload replaced it
                runtime.close()

    def replace(self, runtime: BudgetRuntime) -> None:
        """Serve `runtime` from now on (a reload). Requests already running finish on the
        runtime they began with, which is closed when the last of them ends. Only the
        weights may change: a runtime with other inputs, outputs or defaults is refused,
        and the one serving now stays."""
        runtime.load_sessions()
        new = (_signature(runtime), self._defaults(runtime))
        old = ((self.inputs, self.outputs), (self.mode, self.platform, self._default_policy))
        if new != old:
            raise ConfigError(
                f"the reloaded artifact {runtime.directory} has other inputs, outputs, mode, "
                "policy or backend than the one served: restart the server to change them"
            )
        with self._swap:
            retired, self.runtime = self.runtime, runtime
            idle = retired not in self._users
        if idle:
            retired.close()

    def config(self) -> dict[str, Any]:
        """The model's configuration in Triton's shape (tritonclient's get_model_config):
        dims without the batch axis, which max_batch_size bounds."""

        def tensors(metas: dict[str, TensorMeta]) -> list[dict[str, Any]]:
            return [
                {"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": list(t.shape[1:])}
                for t in metas.values()
            ]

        return {
            "name": self.name,
            "platform": self.platform,
            "backend": "budget-edge",
            "max_batch_size": self.max_batch,
            "input": tensors(self.inputs),
            "output": tensors(self.outputs),
            "parameters": {"mode": {"string_value": self.mode}},
        }

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata object."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.platform,
            "inputs": [t.as_json() for t in self.inputs.values()],
            "outputs": [t.as_json() for t in self.outputs.values()],
            "parameters": {"mode": self.mode},
        }

    async def respond(
        self,
        body: bytes,
        header_length: str | None,
        admission: Admission | None = None,
        observe: RunObserver | None = None,
    ) -> Answer:
        """The serving loop for one request body: parse and check it, run it in chunks of
        `chunk` images, each a turn of its own in `admission`'s queue (None: no queue),
        carry the budget the controller chose for the first chunk to the rest, merge,
        encode. The whole request runs on the runtime serving when it began, across
        reloads. `observe(part, result, budget, waited_s, ran_s)` sees every chunk run.
        """
        with self.pinned() as runtime:
            prepared = await run_in_threadpool(self.prepare, body, header_length)
            del body  # the parsed arrays are all that is needed from here
            deadline = None if admission is None else admission.deadline(prepared.request.timeout_s)
            results: list[InferResult] = []
            chosen: float | None = None
            for index, part in enumerate(prepared.inference.split(self.chunk)):
                if chosen is not None:
                    part = part.with_budget(chosen)
                waiting = time.perf_counter()
                async with _turn(admission, deadline, started=index > 0):
                    start = time.perf_counter()
                    result, budget = await run_in_threadpool(self.run, part, runtime)
                    if observe is not None:
                        ran = time.perf_counter() - start
                        observe(part, result, budget, start - waiting, ran)
                chosen = budget if chosen is None else chosen
                results.append(result)
        merged = InferResult.concat(results)
        content, json_length = await run_in_threadpool(self.answer, prepared, merged, chosen)
        return Answer(content, json_length, len(merged.classes))

    def infer_body(self, body: bytes, header_length: str | None) -> tuple[bytes, int | None]:
        """`respond` without a queue, from synchronous code: the response body and its
        JSON header length, if binary."""
        answer = asyncio.run(self.respond(body, header_length))
        return answer.content, answer.json_length

    def prepare(self, body: bytes, header_length: str | None) -> PreparedRequest:
        """Parse and check a request body (no model run)."""
        request = parse_request(body, header_length)
        wanted = self._wanted_outputs(request)
        inference = self._inference_request(request)
        n = np.shape(inference.images)[0]
        if n > self.max_batch:  # one request must not hold the model for everyone else
            raise PayloadTooLargeError(
                f"the request holds {n} images; this server takes at most {self.max_batch} "
                "per request (serve --max-batch): split it"
            )
        asks_probs = any(out.name == "PROBS" for out in request.outputs or [])
        if asks_probs and not isinstance(inference.decision, Agent):
            raise RequestError(
                "output PROBS exists only when the agent runs: drop the MASK "
                "input or the policy 'static' parameter"
            )
        return PreparedRequest(request, wanted, inference)

    def answer(
        self, prepared: PreparedRequest, result: InferResult, budget: float | None
    ) -> tuple[bytes, int | None]:
        """The response body (and its JSON header length, if binary) for a run request."""
        arrays = _output_arrays(result)
        # Without a policy run there are no PROBS; a request that did not name them gets the rest.
        encoded = [
            encode_output(o.name, arrays[o.name], o.binary)
            for o in prepared.wanted
            if o.name in arrays
        ]
        request = prepared.request
        header: dict[str, Any] = {"model_name": self.name, "model_version": self.version}
        if request.id is not None:
            header["id"] = request.id
        header["parameters"] = _response_parameters(result, budget)
        header["outputs"] = [entry for entry, _ in encoded]
        return encode_body(header, [section for _, section in encoded])

    def run(
        self, inference: InferenceRequest, runtime: BudgetRuntime | None = None
    ) -> tuple[InferResult, float | None]:
        """Run the model (`runtime`: the one the request is pinned to; default the one
        serving now); also return the budget the server chose (None: the request gave one)."""
        with self._lock:
            chosen = None
            if inference.budget is None and not isinstance(inference.decision, Mask):
                chosen = self.controller.budget()
                inference = inference.with_budget(chosen)
            result = (runtime or self.runtime).run(inference)
            observe = getattr(self.controller, "observe", None)
            # Latency tables are per image: only single-image calls steer a controller.
            if chosen is not None and observe is not None and len(result.classes) == 1:
                observe(result.latency_ms["total"], chosen)
        return result, chosen

    # ---- request -> runtime call ---------------------------------------------------

    def _wanted_outputs(self, request: InferRequest) -> list[RequestedOutput]:
        if request.outputs is None:
            return [RequestedOutput(name, request.binary_output) for name in self.outputs]
        for out in request.outputs:
            if out.name not in self.outputs:
                raise RequestError(
                    f"unknown output {out.name!r}: model {self.name!r} has outputs "
                    f"{', '.join(self.outputs)}"
                )
        return request.outputs

    def _inference_request(self, request: InferRequest) -> InferenceRequest:
        for tensor in request.inputs.values():
            self._check_tensor(tensor)
        images_given = [name for name in IMAGE_INPUTS if name in request.inputs]
        if len(images_given) != 1:
            raise RequestError(
                "send exactly one image input: IMAGE (UINT8 pixels, NHWC) or INPUT "
                f"(FP32 preprocessed, NCHW); got {images_given or 'none'}"
            )
        images = request.inputs[images_given[0]].array
        n = images.shape[0]
        for name in ("BUDGET", "MASK"):
            if name in request.inputs and request.inputs[name].array.shape[0] != n:
                raise RequestError(
                    f"input {name} has {request.inputs[name].array.shape[0]} rows for "
                    f"{n} image(s): send one per image"
                )
        parameters = request.parameters
        for key in parameters:
            if key not in PARAMETERS:
                raise RequestError(
                    f"unknown parameter {key!r}: this model takes {', '.join(PARAMETERS)}"
                )
        budget = _budget(request)
        mask = request.inputs["MASK"].array if "MASK" in request.inputs else None
        given_mode = _string_parameter(parameters, "mode")
        given_policy = _string_parameter(parameters, "policy")
        # With a MASK nothing is decided: only what the request itself gave counts, and
        # decision options beside a mask are refused.
        decision = decision_from_options(
            mask,
            mode=given_mode or (None if mask is not None else self.mode),
            seed=_seed(parameters),
            cap=_string_parameter(parameters, "cap"),
            policy=given_policy or ("agent" if mask is not None else self._default_policy),
        )
        return InferenceRequest(images, budget, decision)

    def _check_tensor(self, tensor: Tensor) -> None:
        meta = self.inputs.get(tensor.name)
        if meta is None:
            raise RequestError(
                f"unknown input {tensor.name!r}: model {self.name!r} has inputs "
                f"{', '.join(self.inputs)}"
            )
        if tensor.datatype != meta.datatype:
            raise RequestError(
                f"input {tensor.name} must be {meta.datatype}, got {tensor.datatype}"
            )
        shape = tensor.array.shape
        fits = len(shape) == len(meta.shape) and all(
            want in (-1, got) for want, got in zip(meta.shape, shape, strict=True)
        )
        if not fits:
            raise RequestError(
                f"input {tensor.name} has shape {list(shape)} but the model takes "
                f"{list(meta.shape)} (-1: any batch size)"
            )


@contextlib.asynccontextmanager
async def _turn(
    admission: Admission | None, deadline: float | None, started: bool
) -> AsyncIterator[None]:
    """A turn in the server's queue for one chunk, or none when serving without one."""
    if admission is None or deadline is None:
        yield
        return
    async with admission.turn(deadline, started=started):
        yield


def check_model_name(name: str) -> str:
    """`name` if it can be a model's URL segment, else a ConfigError saying what can."""
    if not MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"model name {name[:80]!r} cannot be part of a URL: use --model-name "
            "with 1 to 64 letters, digits, '.', '_' or '-', starting with a "
            "letter, digit or '_'"
        )
    return name


def _signature(runtime: BudgetRuntime) -> tuple[dict[str, TensorMeta], dict[str, TensorMeta]]:
    """The model's inputs and outputs, from the manifest."""
    c, h, w = runtime.manifest.preprocessing.input_size
    k = runtime.num_components
    inputs = [
        TensorMeta("IMAGE", "UINT8", (-1, h, w, c)),
        TensorMeta("INPUT", "FP32", (-1, c, h, w)),
        TensorMeta("MASK", "BOOL", (-1, k)),
    ]
    outputs = [
        TensorMeta("LOGITS", "FP32", (-1, runtime.num_classes)),
        TensorMeta("CLASS", "INT64", (-1,)),
        TensorMeta("MASK", "BOOL", (-1, k)),
        TensorMeta("FLOPS", "INT64", (-1,)),
    ]
    if runtime.has_policy or runtime.has_static_masks:  # else only explicit masks run
        inputs.insert(2, TensorMeta("BUDGET", "FP32", (-1,)))
    if runtime.has_policy:
        outputs.insert(3, TensorMeta("PROBS", "FP32", (-1, k)))
    return {t.name: t for t in inputs}, {t.name: t for t in outputs}


def _budget(request: InferRequest) -> float | np.ndarray | None:
    tensor = request.inputs.get("BUDGET")
    value = request.parameters.get("budget")
    if tensor is not None and value is not None:
        raise RequestError("send the budget once: as the BUDGET input or the budget parameter")
    if tensor is not None:
        return tensor.array
    if value is None:
        if "budget" in request.parameters:  # null: a client bug, not "use the server's"
            raise RequestError(
                "parameter budget must be a number in [0, 1], got null: "
                "leave it out for the server's budget"
            )
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"parameter budget must be a number in [0, 1], got {value!r}")
    if isinstance(value, int) and value.bit_length() > 64:  # float() would overflow
        raise RequestError(
            f"parameter budget must be a number in [0, 1], got an integer of "
            f"{value.bit_length()} bits"
        )
    return float(value)


def _string_parameter(parameters: dict[str, Any], key: str) -> str | None:
    """The parameter's value; None if absent. null or "" are mistakes, not defaults."""
    if key not in parameters:
        return None
    value = parameters[key]
    if not isinstance(value, str) or not value:
        raise RequestError(
            f"parameter {key} must be a non-empty string, got "
            f"{json.dumps(value)}: leave it out for the default"
        )
    return value


def _seed(parameters: dict[str, Any]) -> int | None:
    seed = parameters.get("seed")
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        shown = (
            f"an integer of {seed.bit_length()} bits"
            if isinstance(seed, int) and seed.bit_length() > 64
            else repr(seed)
        )
        raise RequestError(f"parameter seed must be an integer in [0, 2**63), got {shown}")
    return seed


def _output_arrays(result: InferResult) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        "LOGITS": np.asarray(result.logits, np.float32),
        "CLASS": np.asarray(result.classes, np.int64),
        "MASK": np.asarray(result.mask).astype(bool),
        "FLOPS": np.asarray(result.flops, np.int64),
    }
    if result.probs is not None:
        arrays["PROBS"] = np.asarray(result.probs, np.float32)
    return arrays


def _response_parameters(result: InferResult, budget: float | None) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        f"latency_ms_{key}": round(result.latency_ms.get(key, 0.0), 4) for key in LATENCY_KEYS
    }
    if budget is not None:
        parameters["budget"] = budget
    return parameters
