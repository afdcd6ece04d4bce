const mongoose = require('mongoose');

const messageSchema = new mongoose.Schema({
  room: { type: String, required: true, index: true },
  clientId: { type: String },
  author: {
    id: { type: String, required: true },
    username: { type: String, required: true },
  },
  body: { type: String, required: true },
  sentAt: { type: Date, default: Date.now },
});

module.exports = mongoose.model('Message', messageSchema);
