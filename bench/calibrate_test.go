package bench

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// The latency phase's rate lands near half the tick capacity although ticks do not grow in
// proportion to events: at a low rate an event gets a tick of its own, at a high one ticks
// coalesce several (here ticks = rate / (1 + rate/342): 204 ticks/s at the capacity's 505
// events/s, 2.5 events a tick).
func TestCalibrateRateFindsTheTargetTicks(t *testing.T) {
	ticksAt := func(rate float64) (float64, error) { return rate / (1 + rate/342), nil }
	target := 102.0
	rate, err := calibrateRate(target, target, 505, 2, ticksAt)
	require.NoError(t, err)
	ticks, _ := ticksAt(rate)
	require.InDelta(t, target, ticks, 0.1*target, "rate %.0f events/s makes %.0f ticks/s", rate, ticks)

	naive, _ := ticksAt(505.0 / 2) // half the capacity's events/s, as before
	require.Greater(t, naive, 1.3*target, "half the events/s is far more than half the ticks/s in this model")
}

func TestCalibrateRateStaysUnderTheCeilingAndStopsOnErrors(t *testing.T) {
	rate, err := calibrateRate(100, 100, 150, 2, func(float64) (float64, error) { return 10, nil })
	require.NoError(t, err)
	require.Equal(t, 150.0, rate, "a rate that makes few ticks grows only up to the ceiling")

	rate, err = calibrateRate(100, 100, 500, 2, func(float64) (float64, error) { return 0, nil })
	require.NoError(t, err)
	require.Equal(t, 100.0, rate, "no ticks measured: the first guess stays")

	_, err = calibrateRate(100, 100, 500, 2, func(float64) (float64, error) { return 0, errors.New("cancelled") })
	require.Error(t, err)
}
