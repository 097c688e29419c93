"""Decoding for collections: images (Pillow) and videos (PyAV), uniform or shot-aware frame sampling.

``read_image(path)`` -> upright RGB uint8 (H, W, 3); ``sample_video(path, n, mode)`` -> frames uint8
(n, H, W, 3), times in seconds (n,), duration. Any file that is not decodable media raises
:class:`MediaError` (a :class:`bitseek.errors.BitseekError`) whose message starts with the path.
PyAV and TransNetV2 are imported only when a video is opened (extra ``bitseek[collections]``).
"""

from bitseek.media.errors import MediaError
from bitseek.media.image import image_from_bytes, read_image, to_rgb_array
from bitseek.media.video import VideoInfo, frames_at, probe_video, sample_video, uniform_times

__all__ = ["MediaError", "VideoInfo", "frames_at", "image_from_bytes", "probe_video", "read_image",
           "sample_video", "to_rgb_array", "uniform_times"]
