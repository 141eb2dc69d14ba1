"""Published NAB results of three detectors, restricted to the files of this subset.

Per-file raw scores (standard profile) from numenta/NAB ``results/<detector>/<detector>_
standard_scores.csv``, obtained with each detector's own threshold optimised on the full
58-file corpus (numenta 0.5422, ARTime 0.3175, contextOSE 0.7655). Summed over this subset and
normalised the same way (null = -windows, perfect = +windows) they say what those detectors
score here; with thresholds re-optimised on this subset they could only score the same or more.
"""

from __future__ import annotations

from collections.abc import Mapping

FULL_CORPUS_STANDARD: Mapping[str, float] = {
    "ARTime": 74.9,
    "Numenta HTM": 70.1,
    "contextOSE": 69.9,
}
"""Standard-profile scores on the whole corpus, as the dataset README lists them."""

_PER_FILE = {
    # file: (Numenta HTM, ARTime, contextOSE) raw standard-profile score
    "artificialNoAnomaly/art_daily_no_noise.csv": (-0.22, -0.11, 0.0),
    "artificialNoAnomaly/art_daily_perfect_square_wave.csv": (0.0, 0.0, -0.11),
    "artificialNoAnomaly/art_daily_small_noise.csv": (-0.22, 0.0, -0.11),
    "artificialNoAnomaly/art_flatline.csv": (0.0, 0.0, 0.0),
    "artificialNoAnomaly/art_noisy.csv": (0.0, 0.0, 0.0),
    "artificialWithAnomaly/art_daily_flatmiddle.csv": (
        0.499996314723,
        0.8039739326751801,
        0.905472168219,
    ),
    "artificialWithAnomaly/art_daily_jumpsdown.csv": (
        0.748908670438,
        0.9934530536103384,
        0.75067182427,
    ),
    "artificialWithAnomaly/art_daily_jumpsup.csv": (
        0.86067182427,
        0.8589086704377245,
        0.86067182427,
    ),
    "artificialWithAnomaly/art_daily_nojump.csv": (-1.27835146592, -1.11, -1.22),
    "artificialWithAnomaly/art_increase_spike_density.csv": (
        0.86067182427,
        0.846035950698122,
        0.86241650019,
    ),
    "artificialWithAnomaly/art_load_balancer_spikes.csv": (
        0.734788146524,
        0.0493832824805146,
        0.600378699165,
    ),
    "realAdExchange/exchange-2_cpc_results.csv": (
        0.53195803375,
        0.5319830425923286,
        0.832350327444,
    ),
    "realAdExchange/exchange-2_cpm_results.csv": (
        1.50824342415,
        -0.14465135576188293,
        -0.245878346979,
    ),
    "realAdExchange/exchange-3_cpc_results.csv": (2.72249645115, 2.7007622427413946, 2.48872770811),
    "realAdExchange/exchange-3_cpm_results.csv": (
        0.752161591569,
        0.6422052124689215,
        0.862098587352,
    ),
    "realAdExchange/exchange-4_cpc_results.csv": (
        0.512259966677,
        2.046652209252552,
        0.622257696424,
    ),
    "realAdExchange/exchange-4_cpm_results.csv": (1.49471036268, 1.2574684165754575, 1.60471036268),
    "realKnownCause/ambient_temperature_system_failure.csv": (
        -0.758599859273,
        1.6577326504395065,
        -0.318599859273,
    ),
    "realKnownCause/cpu_utilization_asg_misconfiguration.csv": (
        -0.255718003788,
        -0.257470331859453,
        -0.141289753023,
    ),
    "realKnownCause/ec2_request_latency_system_failure.csv": (
        1.70586905384,
        1.3905835377463662,
        1.99064449099,
    ),
    "realKnownCause/machine_temperature_system_failure.csv": (
        1.36013273774,
        2.5563301921824606,
        -0.164969541073,
    ),
    "realKnownCause/nyc_taxi.csv": (2.43572773247, 3.775210013719179, -1.31976791841),
    "realKnownCause/rogue_agent_key_hold.csv": (
        -1.11370102385,
        -1.280892312855327,
        -0.959262194153,
    ),
    "realKnownCause/rogue_agent_key_updown.csv": (-1.29575982814, -2.567650916046798, -2.22),
}

PER_FILE_STANDARD: Mapping[str, Mapping[str, float]] = {
    name: {f: raw[k] for f, raw in _PER_FILE.items()}
    for k, name in enumerate(("Numenta HTM", "ARTime", "contextOSE"))
}


def subset_standard(detector: str, *, windows: int) -> float:
    """The detector's normalised standard score on this subset (null = -windows)."""
    raw = sum(PER_FILE_STANDARD[detector].values())
    return 100.0 * (raw + windows) / (2.0 * windows)
