"""Search by words on real footage (issue 12, benchmark parts 2-4).

2. Spoken-phrase search: two espeak-ng sentences spoken over each real clip (under the clip's own
   soundtrack where it has one: bigbuckbunny, box, cup), each queried by a paraphrase and by a few
   exact words. A hit is the right video with a span starting within 1 s of the sentence's onset.
3. On-screen text search under corruptions: a sign (about 40 px tall) rendered onto 640x352 real
   footage for 2.5-3 s, clean / defocus blur (severity 1-3) / low-bitrate H.264 re-encode (compression
   severity 3 = CRF 41, severity 4 = CRF 46), queried by its words (lower-case). A hit is the right video with a span overlapping the sign's time.
4. Speed (x real time: video seconds per wall-clock second, 2 threads) of transcription and OCR, and
   the size of the words index per hour of video.

Every number is measured in this one run on a shared 2-core machine (other jobs ran at the same time).

    nice python bench/multimodal_search.py                 # ~3-5 minutes on 2 busy cores
    nice python bench/multimodal_search.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from realworld_data import video_path  # noqa: E402

from tests.words_videos import ESPEAK_RATE, write_speech_video, write_text_video  # noqa: E402

# (sentence, paraphrase, exact words)
SENTENCES = [
    ("The quarterly results were better than expected", "earnings beat the forecast", "quarterly results"),
    ("Please feed the cat before you leave the house", "give the pet its dinner before going out", "feed the cat"),
    ("The train to London leaves from platform nine", "where does the railway service to the capital depart",
     "train to London"),
    ("Heavy rain is expected tomorrow afternoon", "the weather will be wet and stormy soon", "heavy rain"),
    ("Remember to back up your files every week", "save copies of your documents regularly", "back up your files"),
    ("The museum is closed on Mondays", "the gallery does not open at the start of the week", "museum is closed"),
    ("Our team won the football match last night", "we beat the other side in the soccer game", "football match"),
    ("Add two cups of flour and stir slowly", "mix the baking ingredients gently", "cups of flour"),
    ("The doctor said I should get more sleep", "my physician told me to rest more", "more sleep"),
    ("Turn left at the next traffic light", "take the road on the left at the signal", "traffic light"),
    ("The new phone has a much better camera", "the latest mobile takes nicer photos", "better camera"),
    ("The meeting has been moved to Thursday morning", "the appointment was rescheduled", "Thursday morning"),
    ("Water boils at one hundred degrees", "the temperature at which liquid turns to steam", "water boils"),
    ("She is learning to play the violin", "she takes lessons on a string instrument", "play the violin"),
    ("The bridge will be closed for repairs", "the crossing shuts down for maintenance work", "bridge closed"),
    ("Tickets for the concert are sold out", "no seats remain for the music show", "concert tickets"),
    ("The children are playing in the garden", "kids having fun outside in the yard", "children playing"),
    ("Please switch off your phones during the film", "silence mobile devices in the cinema", "switch off phones"),
    ("The price of petrol went up again", "fuel costs have risen once more", "price of petrol"),
    ("The library has thousands of old books", "a large collection of ancient volumes", "old books"),
]
CLIPS = ["bikes", "bigbuckbunny", "megamind", "vtest", "box", "cup", "bikes", "vtest", "megamind", "box"]
WITH_SOUND = {"bigbuckbunny", "box", "cup"}  # clips whose own soundtrack is mixed under the speech
# queries about nothing in the videos: with the confidence floor they must return nothing
NONSENSE = ["xylophone quantum", "banana helicopter", "purple elephant dancing", "zebra saxophone",
            "lorem ipsum dolor", "medieval castle siege", "photosynthesis in plants", "submarine periscope"]
SIGNS = ["FIRE EXIT", "NO PARKING", "OPEN DAILY", "WET FLOOR", "BUS STOP", "CITY MUSEUM", "GATE B12", "HOTEL PARIS"]
SIGN_CLIPS = ["bikes", "vtest", "megamind", "box", "cup", "bigbuckbunny", "vtest", "bikes"]


def soundtrack(name: str, seconds: float) -> np.ndarray | None:
    """The clip's real sound at espeak-ng's rate, at a level under the speech (looped to ``seconds``)."""
    if name not in WITH_SOUND:
        return None
    from vidtune.audio import SAMPLE_RATE, read_audio

    clip = read_audio(video_path(name))
    x = clip.samples[: int(clip.coverage * clip.samples.size)]
    if x.size == 0:
        return None
    n = round(seconds * ESPEAK_RATE)
    x = np.interp(np.arange(n) * SAMPLE_RATE / ESPEAK_RATE % x.size, np.arange(x.size), x).astype(np.float32)
    return 0.3 * x / max(1e-6, np.abs(x).max())


def build_speech(out: Path, seconds: float = 10.0) -> tuple[list[Path], list[dict]]:
    out.mkdir(parents=True, exist_ok=True)
    videos, truth = [], []
    for i, clip in enumerate(CLIPS):
        a, b = SENTENCES[2 * i], SENTENCES[2 * i + 1]
        onsets = (0.8 + 0.1 * i, 5.5 + 0.05 * i)
        p = write_speech_video(out / f"talk{i:02d}_{clip}.mp4", [(onsets[0], a[0]), (onsets[1], b[0])], seconds,
                               source=video_path(clip), offset=0.3 * i, background=soundtrack(clip, seconds))
        videos.append(p)
        for (sentence, para, exact), onset in zip((a, b), onsets):
            truth += [{"path": str(p), "onset": onset, "query": para, "kind": "paraphrase", "sentence": sentence},
                      {"path": str(p), "onset": onset, "query": exact, "kind": "exact", "sentence": sentence}]
    return videos, truth


def build_signs(out: Path, condition: str, seconds: float = 5.0) -> tuple[list[Path], list[dict]]:
    from vidtune.data.corruptions import corrupt

    out.mkdir(parents=True, exist_ok=True)
    ops = {"clean": None, "low_bitrate_crf41": lambda f: corrupt(f, "compression", 3, seed=0),
           "low_bitrate_crf46": lambda f: corrupt(f, "compression", 4, seed=0),
           **{f"blur_s{k}": (lambda f, k=k: corrupt(f, "defocus_blur", k, seed=0)) for k in (1, 2, 3)}}
    videos, truth = [], []
    for i, (sign, clip) in enumerate(zip(SIGNS, SIGN_CLIPS)):
        start, end = 1.0 + 0.25 * (i % 4), 3.5 + 0.25 * (i % 3)
        p = write_text_video(out / f"sign{i:02d}_{clip}.mp4", [(start, end, sign)], seconds, source=video_path(clip),
                             offset=0.5 * i, frame_op=ops[condition], size=(640, 352), scale=1.5)
        videos.append(p)
        truth.append({"path": str(p), "start": start, "end": end, "query": sign.lower(), "sign": sign})
    return videos, truth


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="speech,text", help="speech and/or text (part 4 reports what ran)")
    ap.add_argument("--conditions", default="clean,blur_s3,low_bitrate_crf41,low_bitrate_crf46",
                    help="part 3 conditions: clean, blur_s1..blur_s3 (defocus blur severity), low_bitrate_crf41, "
                         "low_bitrate_crf46")
    args = ap.parse_args(argv)

    parts = set(args.parts.split(","))
    from vidtune.index.text_search import TextIndex, index_text, search_text
    from vidtune.text.embed import SentenceEncoder

    results: dict = {"speed": {"threads": args.threads}}
    tmp = Path(tempfile.mkdtemp(prefix="vidtune-mm-"))
    t0 = time.perf_counter()
    encoder = SentenceEncoder.default()
    results["speed"]["sentence_model_load_s"] = round(time.perf_counter() - t0, 2)
    table = ["| part | measure | value |", "|---|---|---|"]

    if "speech" in parts:  # -- 2. spoken-phrase search ---------------------------------------------------
        from vidtune.audio.speech import SpeechRecognizer, word_error_rate

        t0 = time.perf_counter()
        recognizer = SpeechRecognizer(threads=args.threads, cache=None)  # measure the work, not the cache
        results["speed"]["whisper_load_s"] = round(time.perf_counter() - t0, 2)
        videos, truth = build_speech(tmp / "speech")
        ix = tmp / "ix_speech"
        t = time.perf_counter()  # transcription (+ embedding the sentences, a small part) of every video
        info = index_text(ix, videos, modalities="speech", recognizer=recognizer, encoder=encoder, create=True)
        wall = time.perf_counter() - t
        with TextIndex.open(ix) as tix:
            said = {str(v): " ".join(r[0] for r in tix.db.execute("SELECT text FROM spans WHERE path=? ORDER BY start",
                                                                   (str(v),))) for v in videos}
        wer = float(np.mean([word_error_rate(SENTENCES[2 * i][0] + " " + SENTENCES[2 * i + 1][0], said[str(v)])
                             for i, v in enumerate(videos)]))
        per_kind: dict[str, list[int]] = {"paraphrase": [], "exact": []}
        offsets, misses = [], []
        for q in truth:
            res = search_text(ix, q["query"], k=1, encoder=encoder)["results"]
            hit = bool(res) and res[0]["path"] == q["path"] and abs(res[0]["start"] - q["onset"]) <= 1.0
            if res and res[0]["path"] == q["path"]:
                offsets.append(abs(res[0]["start"] - q["onset"]))
            per_kind[q["kind"]].append(int(hit))
            if not hit:
                misses.append({"query": q["query"], "want": q["sentence"], "got": res[0]["text"] if res else None,
                               "start": res[0]["start"] if res else None, "onset": q["onset"]})
        nonsense = {q: len(search_text(ix, q, encoder=encoder)["results"]) for q in NONSENSE}
        s = results["speech_search"] = {
            "videos": len(videos), "sentences": len(truth) // 2, "queries": len(truth),
            "recall@1_paraphrase": float(np.mean(per_kind["paraphrase"])),
            "recall@1_exact": float(np.mean(per_kind["exact"])),
            "recall@1": float(np.mean(per_kind["paraphrase"] + per_kind["exact"])),
            "span_start_error_s_median": float(np.median(offsets)), "span_start_error_s_max": float(np.max(offsets)),
            "word_error_rate": round(wer, 3), "misses": misses,
            "nonsense_queries_with_results": sum(n > 0 for n in nonsense.values()), "nonsense": nonsense,
        }
        results["speed"]["transcribe_x_realtime"] = round(info["seconds"] / wall, 1)
        results["speed"]["speech_index_bytes_per_hour"] = round(info["bytes"] / (info["seconds"] / 3600))
        table += [f"| 2 spoken phrases ({s['sentences']} sentences in {s['videos']} videos) | recall@1 paraphrase / "
                  f"exact words | {s['recall@1_paraphrase']:.2f} / {s['recall@1_exact']:.2f} |",
                  f"| | span start error, median / max | {s['span_start_error_s_median']:.2f} s / "
                  f"{s['span_start_error_s_max']:.2f} s |",
                  f"| | word error rate of the transcripts | {s['word_error_rate']:.2f} |",
                  f"| | nonsense queries with any result (confidence floor 0.5) | "
                  f"{s['nonsense_queries_with_results']}/{len(NONSENSE)} |"]

    if "text" in parts:  # -- 3. on-screen text search under corruptions ---------------------------------------
        from vidtune.text.ocr import TextReader

        t0 = time.perf_counter()
        reader = TextReader(fps=1.0, threads=args.threads, cache=None)
        results["speed"]["ocr_load_s"] = round(time.perf_counter() - t0, 2)
        results["text_search"] = {}
        ocr_wall, ocr_video_s = 0.0, 0.0
        for cond in args.conditions.split(","):
            videos, truth = build_signs(tmp / cond, cond)
            ixc = tmp / f"ix_{cond}"
            t = time.perf_counter()
            info = index_text(ixc, videos, modalities="text", reader=reader, encoder=encoder, create=True)
            ocr_wall += time.perf_counter() - t
            ocr_video_s += info["seconds"]
            if "text_index_bytes_per_hour" not in results["speed"]:
                results["speed"]["text_index_bytes_per_hour"] = round(info["bytes"] / (info["seconds"] / 3600))
            with TextIndex.open(ixc) as tix:
                read = {str(v): [r[0] for r in tix.db.execute("SELECT text FROM spans WHERE path=?", (str(v),))]
                        for v in videos}
            hits, misses = [], []
            for q in truth:
                res = search_text(ixc, q["query"], k=1, encoder=encoder)["results"]
                hit = (bool(res) and res[0]["path"] == q["path"] and res[0]["start"] < q["end"]
                       and res[0]["end"] > q["start"])
                hits.append(int(hit))
                if not hit:
                    misses.append({"query": q["query"], "got": res[0]["text"] if res else None,
                                   "read": read[q["path"]]})
            nonsense = sum(bool(search_text(ixc, q, encoder=encoder)["results"]) for q in NONSENSE)
            r = results["text_search"][cond] = {
                "videos": len(videos), "recall@1": float(np.mean(hits)), "misses": misses,
                "exact_reads": sum(q["sign"] in read[q["path"]] for q in truth),
                "nonsense_queries_with_results": nonsense}
            table.append(f"| 3 on-screen text, {cond} ({r['videos']} videos) | recall@1 (signs read exactly); "
                         f"nonsense queries with results | {r['recall@1']:.2f} ({r['exact_reads']}/{r['videos']}); "
                         f"{nonsense}/{len(NONSENSE)} |")
        results["speed"]["ocr_1fps_x_realtime"] = round(ocr_video_s / ocr_wall, 2)

    sp = results["speed"]
    table.append(f"| 4 speed, {sp['threads']} threads | transcription / OCR at 1 frame per s, x real time | "
                 f"{sp.get('transcribe_x_realtime', '-')} / {sp.get('ocr_1fps_x_realtime', '-')} |")
    table.append("| | words index per hour of video: speech / on-screen text | "
                 + " / ".join(f"{sp[k] / 1e6:.2f} MB" if k in sp else "-"
                              for k in ("speech_index_bytes_per_hour", "text_index_bytes_per_hour")) + " |")
    print(json.dumps(results, indent=2))
    print("\n" + "\n".join(table))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
