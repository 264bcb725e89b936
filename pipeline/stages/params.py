"""params.yaml: the composed configuration every stage reads, checked against one schema before
any work.

The schema is a pydantic model per section: unknown keys are refused, types and ranges declared,
and the allowed values of a setting with a fixed vocabulary (pipeline.core.choices and the
registries of export formats and occlusion fills) named in the error. A backbone's own options
(its extractor's) are checked by pipeline.models.backbones where it is built, and a spider's
arguments by the spider.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.core.choices import (
    BALANCE_METHODS,
    BLEND_ENCODINGS,
    CALIBRATION_METHODS,
    ENGINES,
    THRESHOLD_RULES,
)
from pipeline.core.errors import ConfigError, MissingInput
from pipeline.data.images import LABELS
from pipeline.models.formats import FORMATS
from pipeline.models.occlusion import FILLS

PARAMS_FILE = Path("params.yaml")
CONFIG_DIR = Path("configs")
CONFIG_NAME = "config"


def one_of(values: tuple[str, ...]) -> Any:
    """The type of a setting whose value is one of `values`."""
    return Literal[values]


Count = Annotated[int, Field(ge=1)]
Share = Annotated[float, Field(gt=0, lt=1)]
Quality = Annotated[int, Field(ge=1, le=100)]
Sigma = Annotated[float, Field(ge=0, le=100)]
Fraction = Annotated[float, Field(ge=0.01, le=1)]


class Section(BaseModel):
    """A section of params.yaml: no key outside those declared, no value coerced from a string."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Split(Section):
    val: Share
    test: Share

    @model_validator(mode="after")
    def leaves_a_training_share(self) -> Split:
        if self.val + self.test >= 1:
            raise ValueError(
                f"val {self.val} and test {self.test} leave no training share: their sum must be "
                "under 1"
            )
        return self


class Data(Section):
    min_size: Count
    max_hamming: Annotated[int, Field(ge=0, le=64)]  # a 64-bit perceptual hash
    normalize: bool
    split: Split


class Balance(Section):
    method: one_of(BALANCE_METHODS)
    k_neighbors: Count = 5
    sampling_strategy: str | float | dict[str, int] = "auto"  # imbalanced-learn's


class Head(Section):
    units: Annotated[int, Field(ge=0)]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    learning_rate: Annotated[float, Field(gt=0)]
    epochs: Count
    batch_size: Count
    patience: Annotated[int, Field(ge=0)]


class Calibration(Section):
    method: one_of(CALIBRATION_METHODS)
    threshold: one_of(THRESHOLD_RULES)
    target_fpr_real: Share = 0.05


class Engine(BaseModel):
    """The engine's own settings differ by engine; pipeline.models.engines checks them."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    name: one_of(ENGINES)


class Export(Section):
    formats: list[one_of(tuple(FORMATS))]


class Reencode(Section):
    format: one_of(("JPEG", "PNG", "WEBP"))
    quality: Quality


class Robustness(Section):
    jpeg_quality: list[Quality] = []
    blur_sigma: list[Sigma] = []
    downscale: list[Fraction] = []
    center_crop: list[Fraction] = []
    reencode: Reencode | None = None


class Augment(Section):
    copies: Annotated[int, Field(ge=0, le=100)]
    p: Annotated[float, Field(ge=0, le=1)]
    jpeg_quality: list[Quality]
    blur_sigma: list[Sigma]

    @field_validator("jpeg_quality", "blur_sigma")
    @classmethod
    def low_high(cls, pair: list[float]) -> list[float]:
        if len(pair) != 2 or pair[0] > pair[1]:
            raise ValueError("give a [low, high] pair")
        return pair


class Explain(Section):
    grid: Annotated[int, Field(ge=2, le=64)]
    fill: one_of(FILLS)
    gallery: Annotated[int, Field(ge=1, le=100)]
    images: Annotated[int, Field(ge=2, le=100_000)]  # a bootstrap interval needs two images
    steps: Annotated[int, Field(ge=2, le=4096)]
    random_orders: Annotated[int, Field(ge=1, le=100)]


class Blend(Section):
    fractions: list[Annotated[float, Field(ge=0, le=1)]]
    composites: Annotated[int, Field(ge=2, le=100_000)]  # a bootstrap interval needs two
    feather: Annotated[float, Field(ge=0.001, le=0.5)]
    encode: one_of(BLEND_ENCODINGS)
    jpeg_quality: Quality
    maps: Annotated[int, Field(ge=0, le=100_000)]

    @field_validator("fractions")
    @classmethod
    def increasing(cls, fractions: list[float]) -> list[float]:
        # the curve is read from the lowest fraction up, for the one at which the verdict flips
        if len(fractions) < 2 or sorted(set(fractions)) != fractions:
            raise ValueError(
                "give two or more AI area fractions from 0 to 1, in increasing order, each once"
            )
        return fractions


class Backbone(BaseModel):
    """The settings every backbone has; its extractor's own options are checked where the
    backbone is built (pipeline.models.backbones)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    name: str
    extractor: str = "keras_application"
    weights: str | None = None
    input_size: Annotated[int, Field(ge=8)]
    batch_size: Count
    training: dict[str, Any] | None = None


class Chosen(Section):
    name: str


class Spider(Section):
    """What every spider's section holds besides its own arguments (scrapers/spiders/): the
    contact for its User-Agent, a quota per label and Scrapy settings to override. A setting left
    out takes the spider's default."""

    contact: str | None = None
    max_items: Count | None = None
    settings: dict[str, Any] | None = None


class CommonsSource(Section):
    category: Annotated[str, Field(pattern="^Category:")]
    label: one_of(LABELS)
    name: str | None = None


class Commons(Spider):
    spider: Literal["commons"]
    sources: list[CommonsSource]
    api: str | None = None
    token_env: str | None = None
    thumb_width: Count | None = None
    depth: Annotated[int, Field(ge=0)] | None = None
    segments: Count | None = None
    seed: int | None = None
    mime_types: list[str] | None = None
    maxlag: Annotated[int, Field(ge=0)] | None = None
    page_size: Annotated[int, Field(ge=1, le=500)] | None = None  # MediaWiki's limit for a client


class Gallery(Spider):
    spider: Literal["gallery"]
    sources: list[dict[str, Any]]  # start URLs, CSS selectors and domains: the spider checks them


class Local(Spider):
    spider: Literal["local"]
    source: str | None = None
    source_name: str | None = None
    follow_outside_symlinks: bool | None = None


class Urls(Spider):
    spider: Literal["urls"]
    source: str | None = None
    source_name: str | None = None
    urls: list[dict[str, str]] | None = None


SPIDERS = (Commons, Gallery, Local, Urls)  # one per spider of scrapers/spiders/
Scrape = Annotated[Commons | Gallery | Local | Urls, Field(discriminator="spider")]


class Params(Section):
    """params.yaml. Sections that are absent are not checked: a stage reads only its own."""

    seed: int | None = None
    backbone: Chosen | None = None
    backbones: dict[str, Backbone] | None = None
    scrape: Scrape | None = None
    data: Data | None = None
    balance: Balance | None = None
    head: Head | None = None
    calibration: Calibration | None = None
    engine: Engine | None = None
    export: Export | None = None
    robustness: Robustness | None = None
    augment: Augment | None = None
    explain: Explain | None = None
    blend: Blend | None = None

    @model_validator(mode="after")
    def names_match(self) -> Params:
        for key, spec in (self.backbones or {}).items():
            if spec.name != key:
                raise ValueError(f"backbones.{key}.name must be {key!r}, got {spec.name!r}")
        chosen = self.backbone.name if self.backbone else None
        if chosen is not None and self.backbones is not None and chosen not in self.backbones:
            raise ValueError(
                f"Backbone {chosen!r} is not in params.yaml's `backbones` "
                f"({', '.join(self.backbones)}); add it to the defaults list in configs/config.yaml"
            )
        return self


def setting(location: tuple[int | str, ...]) -> str:
    """A setting's dotted name from a pydantic error location (list items as [i])."""
    name = ""
    for previous, part in zip((None, *location), location, strict=False):
        if previous == "scrape":  # the union's tag, the spider, that pydantic puts in the path
            continue
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name


def explain(error: dict[str, Any]) -> str:
    """One sentence for one pydantic error, in the project's words."""
    where = setting(error["loc"])
    if error["type"] == "literal_error":
        expected = error["ctx"]["expected"].replace(" or ", ", ")
        return f"{where} is {error['input']!r}; allowed values: {expected}"
    if error["type"] == "union_tag_invalid":  # scrape.spider, the tag of the spiders' union
        where, tag = f"{where}.{error['ctx']['discriminator'].strip(chr(39))}", error["ctx"]["tag"]
        return f"{where} is {tag!r}; allowed values: {error['ctx']['expected_tags']}"
    if error["type"] == "extra_forbidden":
        return f"{where} is not a setting; allowed: {', '.join(settings_at(error['loc'][:-1]))}"
    message = error["msg"].removeprefix("Value error, ")
    if not where:
        return message
    message = message[:1].lower() + message[1:]
    if error["type"] == "missing":
        return f"{where} is missing"
    if isinstance(error["input"], dict):  # a check of a whole section
        return f"{where}: {message}"
    return f"{where} is {error['input']!r}: {message}"


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The schema's models an annotation holds: itself, or inside a union, list, dict or
    Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for inner in getattr(annotation, "__args__", ()) for model in models_in(inner)]


def settings_at(location: tuple[int | str, ...]) -> list[str]:
    """The settings the schema declares at `location` (a section, or a section's part)."""
    model: Any = Params
    for previous, part in zip((None, *location), location, strict=False):
        if previous == "scrape":  # the spider's tag picks its model
            model = next(m for m in SPIDERS if m.model_fields["spider"].annotation == Literal[part])
        elif isinstance(part, str) and part in model.model_fields:
            model = models_in(model.model_fields[part].annotation)[0]
    return list(model.model_fields)


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """`params` if it fits the schema; else ConfigError naming each wrong setting and why."""
    try:
        Params.model_validate(params)
    except ValidationError as invalid:
        raise ConfigError("; ".join(explain(e) for e in invalid.errors()) + ".") from None
    return params


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml, validated."""
    if not Path(path).is_file():
        raise MissingInput(f"{path} not found: run `aiic compose` (or `dvc exp run`) to write it.")
    with open(path, encoding="utf-8") as file:
        return validate(yaml.safe_load(file))


def compose(
    overrides: list[str] | None = None,
    config_dir: Path = CONFIG_DIR,
    output: Path = PARAMS_FILE,
) -> None:
    """Compose configs/ into params.yaml exactly as `dvc exp run` does (DVC's own Hydra code)."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(
        output, str(Path(config_dir).resolve()), None, CONFIG_NAME, "", overrides or []
    )


def backbone_spec(params: dict[str, Any], name: str) -> dict[str, Any]:
    """The settings of one backbone from the `backbones` dict, with a clear error for a typo."""
    backbones = params["backbones"]
    if name not in backbones:
        raise ConfigError(
            f"Backbone {name!r} is not in params.yaml's `backbones` ({', '.join(backbones)}); "
            "add it to the defaults list in configs/config.yaml."
        )
    return backbones[name]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """compose's arguments, declared once for its own parser and `aiic compose`'s sub-parser."""
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDE",
        help="Hydra overrides, as `dvc exp run -S` takes them (e.g. backbone=vgg16)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="aiic compose", description="Compose configs/ into params.yaml (Hydra overrides)."
    )
    add_arguments(parser)
    compose(parser.parse_args().overrides)
