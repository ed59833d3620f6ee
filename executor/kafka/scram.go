package kafka

import (
	"context"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// scramClients returns sarama's maker of SCRAM conversations for
// mechanism, nil for mechanisms that are not SCRAM. The conversation is
// franz-go's (a module we already build with), which sarama leaves to its
// users.
func scramClients(mechanism string) func() sarama.SCRAMClient {
	var hash func(scram.Auth) sasl.Mechanism
	switch mechanism {
	case sarama.SASLTypeSCRAMSHA256:
		hash = scram.Auth.AsSha256Mechanism
	case sarama.SASLTypeSCRAMSHA512:
		hash = scram.Auth.AsSha512Mechanism
	default:
		return nil
	}
	return func() sarama.SCRAMClient { return &scramClient{mechanism: hash} }
}

// scramClient runs one SCRAM conversation (RFC 5802) as sarama steps it:
// the first step sends the client's first message, each later one answers
// the server's; the server's last message proves it knew the password.
type scramClient struct {
	mechanism func(scram.Auth) sasl.Mechanism
	auth      scram.Auth
	session   sasl.Session
	done      bool
}

func (c *scramClient) Begin(user, password, authzID string) error {
	c.auth = scram.Auth{User: user, Pass: password, Zid: authzID}
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) {
	if c.session == nil {
		// Authenticate only builds the first message: nothing to cancel.
		session, first, err := c.mechanism(c.auth).Authenticate(context.Background(), "")
		c.session = session
		return string(first), err
	}
	done, response, err := c.session.Challenge([]byte(challenge))
	c.done = done
	return string(response), err
}

func (c *scramClient) Done() bool { return c.done }
