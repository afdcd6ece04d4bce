// A real-time chat server the way the classic tutorial builds it: Express for signup and login,
// socket.io for rooms, JSON Web Tokens for authentication and Mongoose for storage.
//
// Environment: PORT, MONGODB_URI, JWT_SECRET (required), BCRYPT_ROUNDS (default 12).
const express = require('express');
const http = require('http');
const mongoose = require('mongoose');
const jwt = require('jsonwebtoken');
const { Server } = require('socket.io');

const authRoutes = require('./routes/auth');
const Message = require('./models/Message');

const PORT = process.env.PORT || 3000;
const MONGODB_URI = process.env.MONGODB_URI || 'mongodb://127.0.0.1:27017/socketio_seed';
const JWT_SECRET = process.env.JWT_SECRET;

if (!JWT_SECRET) {
  console.error('JWT_SECRET is required');
  process.exit(1);
}

const app = express();
app.use(express.json());
app.use('/api/auth', authRoutes);
app.get('/health/live', (req, res) => res.json({ status: 'ok' }));

const server = http.createServer(app);
const io = new Server(server, { cors: { origin: '*' } });

// Every socket must present a valid token in the handshake.
io.use((socket, next) => {
  const token = socket.handshake.auth?.token || socket.handshake.query?.token;
  if (!token) {
    return next(new Error('Authentication error'));
  }
  jwt.verify(token, JWT_SECRET, (err, decoded) => {
    if (err) {
      return next(new Error('Authentication error'));
    }
    socket.user = decoded;
    next();
  });
});

io.on('connection', (socket) => {
  // Joining a room answers the room's last 50 messages.
  socket.on('join_room', async (room) => {
    socket.join(room);
    try {
      const messages = await Message.find({ room }).sort({ sentAt: -1 }).limit(50);
      socket.emit('room_history', { room, messages: messages.reverse() });
    } catch (err) {
      console.error(err);
    }
  });

  // A message goes to everyone else in the room and is saved.
  socket.on('send_message', async (data) => {
    const message = new Message({
      room: data.room,
      clientId: data.client_id,
      author: { id: socket.user.id, username: socket.user.username },
      body: data.body,
    });
    socket.to(data.room).emit('receive_message', {
      id: message._id,
      room: message.room,
      client_id: message.clientId,
      author: message.author,
      body: message.body,
      sent_at: message.sentAt,
    });
    try {
      await message.save();
    } catch (err) {
      console.error(err);
    }
  });

  socket.on('leave_room', (room) => {
    socket.leave(room);
  });
});

mongoose
  .connect(MONGODB_URI)
  .then(() => {
    server.listen(PORT, '127.0.0.1', () => {
      console.log(`Server listening on port ${PORT}`);
    });
  })
  .catch((err) => {
    console.error('MongoDB connection error:', err);
    process.exit(1);
  });
