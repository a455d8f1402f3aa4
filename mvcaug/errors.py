"""The errors that mean "fix your input", as opposed to bugs: stages report them in one line."""

from mvcaug.caption import CaptionError
from mvcaug.denoiser import ModelError
from mvcaug.embed import EncoderError
from mvcaug.inception import InceptionWeightsError
from mvcaug.mix import MixError
from mvcaug.params import ParamsError
from mvcaug.prepare import DatasetError

USER_ERRORS: tuple[type[Exception], ...] = (
    CaptionError, DatasetError, EncoderError, FileNotFoundError, InceptionWeightsError, MixError, ModelError,
    ParamsError,
)
