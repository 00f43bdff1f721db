"""Sound: the audio track of a video, decoded and aligned with the video's own clock.

Times are seconds relative to the first frame of the video stream, like everywhere in vidtune, so a
window ``[start, end)`` of frames and of sound cover the same moment.
"""

from vidtune.audio.decode import SAMPLE_RATE, AudioClip, audio_info, read_audio

__all__ = ["SAMPLE_RATE", "AudioClip", "audio_info", "read_audio"]
