package agenttoken

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestIssueAndVerify(t *testing.T) {
	t.Parallel()
	s, err := NewSigner("0123456789abcdef0123")
	require.NoError(t, err)
	now := time.Unix(1_800_000_000, 0)
	tok := s.Issue("town", "agent", now.Add(time.Hour))
	c, err := s.Verify(tok, now)
	require.NoError(t, err)
	require.Equal(t, "town", c.TownID)
	require.Equal(t, "agent", c.AgentID)
	_, err = s.Verify(tok, now.Add(2*time.Hour))
	require.ErrorIs(t, err, ErrExpired)
	_, err = s.Verify(tok[:len(tok)-2]+"xx", now)
	require.ErrorIs(t, err, ErrSignature)
	forged := "gta1.town.other-agent." + tok[len("gta1.town.agent."):]
	_, err = s.Verify(forged, now)
	require.ErrorIs(t, err, ErrSignature, "a token cannot be re-pointed at another agent")
	other, err := NewSigner("another-secret-of-16+")
	require.NoError(t, err)
	_, err = other.Verify(tok, now)
	require.ErrorIs(t, err, ErrSignature)
	_, err = s.Verify("garbage", now)
	require.ErrorIs(t, err, ErrMalformed)
	_, err = NewSigner("short")
	require.Error(t, err)
}
